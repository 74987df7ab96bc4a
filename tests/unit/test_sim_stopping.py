"""Early-stop semantics on a trajectory agree with the node SDK's controller."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.node.controller import Controller
from pipeline.node.decision import Rule, decide
from pipeline.node.snapshot import compile_snapshot
from pipeline.sim import SimClock, early_stop, scenario, simulate, stop_index
from schemas import InferenceEvent, PolicyBody, SegmentPolicy


@st.composite
def trajectories(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    gaps = draw(st.lists(st.integers(1, 40), min_size=1, max_size=30))
    tokens = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    conf = draw(
        st.lists(
            st.floats(0.0, 1.0).map(lambda x: round(x, 2)),
            min_size=len(tokens),
            max_size=len(tokens),
        )
    )
    return tokens, conf


def test_first_confident_checkpoint_after_min_tokens() -> None:
    tokens, conf = [8, 16, 24, 32, 40], [0.95, 0.5, 0.9, 0.7, 0.6]
    assert stop_index(tokens, conf, 0.9) == 0
    assert stop_index(tokens, conf, 0.9, min_tokens=10) == 2
    assert stop_index(tokens, conf, 0.96) == 4
    point = early_stop(tokens, conf, 0.9, min_tokens=10)
    assert (point.index, point.tokens, point.confidence, point.reason, point.cut) == (
        2,
        24,
        0.9,
        "confident",
        True,
    )


def test_the_last_checkpoint_says_why_generation_ended() -> None:
    tokens, conf = [16, 32], [0.1, 0.99]
    assert early_stop(tokens, conf, 0.9, natural_end=True).reason == "natural_end"
    assert early_stop(tokens, conf, 0.9, natural_end=False).reason == "confident"
    assert early_stop(tokens, conf, 0.999, natural_end=False).reason == "budget"
    assert not early_stop(tokens, conf, 0.9).cut


def test_empty_or_ragged_trajectories_are_refused() -> None:
    with pytest.raises(ValueError, match="one confidence per checkpoint"):
        early_stop([], [], 0.5)
    with pytest.raises(ValueError, match="one confidence per checkpoint"):
        early_stop([1, 2], [0.5], 0.5)


@given(
    trajectories(),
    st.floats(0.0, 1.0).map(lambda x: round(x, 2)),
    st.integers(0, 200),
    st.booleans(),
)
def test_matches_the_sdk_decision_at_every_checkpoint(
    traj: tuple[list[int], list[float]], threshold: float, min_tokens: int, natural: bool
) -> None:
    tokens, conf = traj
    last = tokens[-1]
    # A natural end comes before the budget; a budget stop ends exactly at it.
    budget = max(last + 1 if natural else last, min_tokens)
    if not natural and budget != last:
        return  # min_tokens above the budget is refused by the policy contract
    rule = Rule(threshold=threshold, min_tokens=min_tokens, token_budget=budget)
    sdk_index, sdk_reason = len(tokens) - 1, "natural_end"
    for i, (t, c) in enumerate(zip(tokens, conf, strict=True)):
        decision = decide(rule, t, c)
        if decision.stop:
            sdk_index, sdk_reason = i, decision.reason
            break
    point = early_stop(tokens, conf, threshold, min_tokens=min_tokens, natural_end=natural)
    assert point.index == sdk_index
    if point.index < len(tokens) - 1 or not natural:
        assert point.reason == sdk_reason


def test_served_requests_stop_where_the_offline_semantics_say() -> None:
    policy = SegmentPolicy(
        thresholds={"normal": 0.85, "peak": 0.8, "offpeak": 0.9}, min_tokens=32, token_budget=300
    )
    body = PolicyBody(segments={"global": policy}, exploration_share=0.1)
    snapshot = compile_snapshot(body, policy_name="default", version=3, source="broker")
    controllers = [Controller(snapshot) for _ in range(2)]
    clock = SimClock(datetime(2024, 5, 1, tzinfo=UTC), rate=20.0)
    served = list(simulate(scenario(), 5, controllers, 1500, clock))
    explored = [s for s in served if s.event.exploration]
    assert 0.05 < len(explored) / len(served) < 0.15
    budget_stops = 0
    for s in served:
        event, lat = s.event, s.request.latent
        InferenceEvent.from_bytes(event.to_bytes())  # valid on the wire
        assert event.policy_version == 3
        assert event.tokens_budget == 300
        if event.exploration:
            assert s.stop == len(lat.tokens) - 1
            assert event.trajectory is not None
            assert [p.tokens for p in event.trajectory] == list(lat.tokens)
            continue
        # The load mode (with hysteresis) picks the threshold; the event reports which.
        if event.threshold is None:
            assert event.tokens_generated < 32
        else:
            assert event.threshold in policy.thresholds.values()
        threshold = 1.0 if event.threshold is None else event.threshold
        point = early_stop(
            lat.tokens, lat.confidence, threshold, min_tokens=32, natural_end=lat.natural_end
        )
        assert s.stop == point.index
        assert event.stop_reason == point.reason
        assert event.answer == s.request.answers[s.stop]
        budget_stops += event.stop_reason == "budget"
    assert budget_stops > 0
    assert sum(s.event.stop_reason == "confident" for s in served) > 300
