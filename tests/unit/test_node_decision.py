"""The hot path agrees with the contract's own reading of a policy."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pipeline.node import Controller, compile_snapshot, decide
from pipeline.node.decision import (
    BELOW_THRESHOLD,
    BUDGET,
    CONFIDENT,
    EXPLORATION,
    LOAD_MODES,
    MIN_TOKENS,
    Decision,
)
from pipeline.node.snapshot import compile_segment
from schemas import LoadMode, PolicyBody, SegmentPolicy

unit = st.floats(0.0, 1.0)


@st.composite
def segment_policies(draw: st.DrawFn) -> SegmentPolicy:
    budget = draw(st.integers(1, 5000))
    modes: list[LoadMode] = draw(st.lists(st.sampled_from(["offpeak", "peak"]), unique=True))
    thresholds: dict[LoadMode, float] = {"normal": draw(unit), **{m: draw(unit) for m in modes}}
    starts = sorted(draw(st.lists(st.integers(0, 6000), unique=True, max_size=5)))
    own: list[LoadMode] = draw(st.lists(st.sampled_from(LOAD_MODES), unique=True, max_size=3))
    schedules = {
        m: tuple(
            (s, draw(unit))
            for s in sorted(draw(st.lists(st.integers(0, 6000), unique=True, max_size=3)))
        )
        for m in own
    }
    return SegmentPolicy(
        thresholds=thresholds,
        min_tokens=draw(st.integers(0, budget)),
        token_budget=budget,
        schedule=tuple((s, draw(unit)) for s in starts),
        schedules=schedules,
    )


def reference(policy: SegmentPolicy, mode: LoadMode, tokens: int, confidence: float) -> Decision:
    """The decision spelled out from the schema's SegmentPolicy.threshold_at."""
    threshold = policy.threshold_at(tokens, mode)
    if threshold is None:
        return MIN_TOKENS
    # A threshold of 1.0 is off: a probe may report exactly 1.0, which must not stop early.
    if threshold < 1.0 and confidence >= threshold:
        return CONFIDENT
    if tokens >= policy.token_budget:
        return BUDGET
    return BELOW_THRESHOLD


@given(segment_policies(), st.sampled_from(LOAD_MODES), st.integers(0, 7000), unit)
def test_compiled_rule_decides_like_the_contract(
    policy: SegmentPolicy, mode: LoadMode, tokens: int, confidence: float
) -> None:
    rules = compile_segment("global", policy, 0.0)
    rule = rules.modes[LOAD_MODES.index(mode)]
    assert decide(rule, tokens, confidence) == reference(policy, mode, tokens, confidence)
    assert rule.threshold_at(tokens) == policy.threshold_at(tokens, mode)


@given(segment_policies(), st.integers(0, 7000), unit, st.text(min_size=1, max_size=20))
def test_controller_inlined_path_equals_decide(
    policy: SegmentPolicy, tokens: int, confidence: float, request_id: str
) -> None:
    body = PolicyBody(segments={"global": policy}, exploration_share=0.5)
    controller = Controller(compile_snapshot(body, policy_name="p", version=1, source="broker"))
    plan = controller.begin(request_id, "t/qa/short")
    expected = decide(plan.rule, tokens, confidence)
    assert controller.should_stop(plan, tokens, confidence) is expected
    assert plan.should_stop(tokens, confidence) is expected
    if not plan.exploration:
        assert controller.should_stop("t/qa/short", tokens, confidence) is expected


@given(segment_policies(), st.integers(0, 7000), unit)
def test_exploration_runs_to_the_budget(policy: SegmentPolicy, tokens: int, conf: float) -> None:
    explore = compile_segment("global", policy, 0.0).explore
    expected = BUDGET if tokens >= policy.token_budget else EXPLORATION
    assert decide(explore, tokens, conf) is expected
    assert explore.threshold_at(tokens) is None


def test_each_reason_on_a_concrete_policy() -> None:
    policy = SegmentPolicy(thresholds={"normal": 0.8}, min_tokens=4, token_budget=10)
    rule = compile_segment("global", policy, 0.0).modes[1]
    assert decide(rule, 3, 1.0) is MIN_TOKENS
    assert decide(rule, 4, 0.79) is BELOW_THRESHOLD
    assert decide(rule, 4, 0.8) is CONFIDENT
    assert decide(rule, 10, 0.1) is BUDGET
    assert decide(rule, 10, 0.9) is CONFIDENT  # sure at the last token: not a cut-off
    assert decide(rule, 5, math.nan) is BELOW_THRESHOLD


def test_decision_is_truthy_exactly_when_it_stops() -> None:
    assert CONFIDENT and BUDGET
    assert not (BELOW_THRESHOLD or MIN_TOKENS or EXPLORATION)
    assert {CONFIDENT.reason, BUDGET.reason} == {"confident", "budget"}


def test_a_threshold_of_one_is_off_even_at_full_confidence() -> None:
    from pipeline.node.decision import CONFIDENT, Rule, decide

    off = Rule(threshold=1.0, min_tokens=0, token_budget=100)
    assert decide(off, 50, 1.0) != CONFIDENT
    assert off.threshold_at(50) == 1.0  # reported as the policy says
    scheduled = Rule(threshold=0.9, min_tokens=0, token_budget=100, step_starts=(40,),
                     step_thresholds=(1.0,))  # fmt: skip
    assert decide(scheduled, 30, 0.95) == CONFIDENT
    assert decide(scheduled, 50, 1.0) != CONFIDENT
    assert decide(Rule(threshold=0.99, min_tokens=0, token_budget=100), 50, 1.0) == CONFIDENT


def test_a_segment_explores_at_its_own_share_and_others_at_the_policy_s() -> None:
    from pipeline.node.controller import Controller
    from pipeline.node.snapshot import compile_snapshot
    from schemas import PolicyBody

    def policy(share: float | None) -> SegmentPolicy:
        return SegmentPolicy(
            thresholds={"normal": 0.9}, min_tokens=4, token_budget=256, exploration_share=share
        )

    body = PolicyBody(
        segments={
            "global": policy(None),
            "acme/qa/short": policy(0.5),
            "beta/qa/short": policy(0.0),
        },
        exploration_share=0.1,
    )
    snap = compile_snapshot(body, policy_name="p", version=2, source="broker")
    controller = Controller(snap)
    shares = {}
    for key in ("acme/qa/short", "beta/qa/short", "gamma/qa/long"):
        plans = [controller.begin(f"req-{i}", key) for i in range(4000)]
        shares[key] = sum(p.exploration for p in plans) / len(plans)
    assert abs(shares["acme/qa/short"] - 0.5) < 0.03
    assert shares["beta/qa/short"] == 0.0
    assert abs(shares["gamma/qa/long"] - 0.1) < 0.02  # falls back to global: the policy's share


def test_an_unset_segment_share_leaves_the_signed_bytes_unchanged() -> None:
    from datetime import UTC, datetime

    from schemas import PolicyBody
    from schemas.control import canonical_body_bytes

    plain = SegmentPolicy(thresholds={"normal": 0.9}, min_tokens=4, token_budget=256)
    body = PolicyBody(segments={"global": plain}, exploration_share=0.1)
    raw = canonical_body_bytes("p", 3, datetime(2026, 1, 1, tzinfo=UTC), body)
    assert b'exploration_share":0.1' in raw and raw.count(b"exploration_share") == 1
    shared = plain.model_copy(update={"exploration_share": 0.02})
    both = PolicyBody(segments={"global": shared}, exploration_share=0.1)
    again = canonical_body_bytes("p", 3, datetime(2026, 1, 1, tzinfo=UTC), both)
    assert again.count(b"exploration_share") == 2
    assert PolicyBody.model_validate_json(both.model_dump_json()) == both
