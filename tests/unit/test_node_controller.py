"""Segment fallback, request plans, bucketing and atomic swaps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.node import Controller, LoadBands, buckets, compile_snapshot, next_load_mode
from pipeline.node.snapshot import PolicySnapshot
from schemas import LoadMode, PolicyBody, Segment, SegmentPolicy


def seg(threshold: float, budget: int = 100, min_tokens: int = 0) -> SegmentPolicy:
    return SegmentPolicy(
        thresholds={"normal": threshold, "peak": threshold / 2},
        min_tokens=min_tokens,
        token_budget=budget,
    )


def body(**extra: object) -> PolicyBody:
    fields: dict[str, object] = {
        "segments": {"global": seg(0.9), "qa": seg(0.8), "acme/qa/short": seg(0.7)},
        "exploration_share": 0.0,
    }
    fields.update(extra)
    return PolicyBody.model_validate(fields)


def snapshot(version: int = 1, **extra: object) -> PolicySnapshot:
    return compile_snapshot(body(**extra), policy_name="p", version=version, source="broker")


def test_segments_fall_back_tenant_task_length_then_task_then_global() -> None:
    snap = snapshot()
    assert snap.resolve("acme/qa/short").key == "acme/qa/short"
    assert snap.resolve("acme/qa/long").key == "qa"
    assert snap.resolve("other/qa/short").key == "qa"
    assert snap.resolve("acme/chat/short").key == "global"
    assert snap.resolve("qa").key == "qa"
    assert snap.resolve(Segment(tenant="acme", task="qa", length_bucket="short")).key == (
        "acme/qa/short"
    )


def test_resolution_is_memoised_and_the_memo_is_bounded() -> None:
    snap = compile_snapshot(body(), policy_name="p", version=1, source="broker", cache_size=16)
    first = snap.resolve("acme/qa/long")
    assert snap.resolved["acme/qa/long"] is first
    for i in range(40):
        snap.resolve(f"t{i}/qa/short")
    assert len(snap.resolved) <= 16


def test_should_stop_without_a_plan_uses_the_current_load_mode() -> None:
    controller = Controller(snapshot())
    assert controller.should_stop("acme/qa/short", 10, 0.7).reason == "confident"
    assert controller.should_stop("acme/qa/short", 10, 0.5).reason == "below_threshold"
    controller.observe_load(0.99)
    assert controller.load_mode == "peak"
    assert controller.should_stop("acme/qa/short", 10, 0.5).reason == "confident"  # 0.35 at peak


def test_a_plan_keeps_its_version_and_threshold_across_a_swap() -> None:
    controller = Controller(snapshot(version=1))
    plan = controller.begin("req-1", "acme/qa/short")
    controller.swap(
        compile_snapshot(
            PolicyBody(segments={"global": seg(0.99)}, exploration_share=0.0),
            policy_name="p",
            version=2,
            source="broker",
        )
    )
    assert plan.policy_version == 1
    assert controller.should_stop(plan, 10, 0.75).stop
    assert not controller.should_stop("acme/qa/short", 10, 0.75).stop
    assert controller.begin("req-1", "acme/qa/short").policy_version == 2


def test_canary_requests_use_the_candidate_and_its_version() -> None:
    candidate = {"global": seg(0.5, budget=64)}
    controller = Controller(
        snapshot(canary_share=1.0, candidate_version=7, candidate_segments=candidate)
    )
    plan = controller.begin("req-1", "acme/qa/short")
    assert (plan.arm, plan.policy_version, plan.segment_key) == ("candidate", 7, "global")
    assert plan.threshold_at(0) == 0.5
    assert plan.token_budget == 64


def test_exploration_requests_run_without_a_threshold() -> None:
    controller = Controller(snapshot(exploration_share=0.5))
    plan = controller.begin("req-x", "acme/qa/short")
    while not plan.exploration:  # find an exploring id; the bucket decides
        plan = controller.begin(plan.request_id + "x", "acme/qa/short")
    assert plan.arm == "production"
    assert plan.threshold_at(50) is None
    assert controller.should_stop(plan, 50, 1.0).reason == "exploration"
    assert controller.should_stop(plan, 100, 1.0).reason == "budget"


def test_buckets_are_pinned() -> None:
    # Every node, every restart and the offline analysis must agree on these.
    assert buckets("req-0001") == buckets("req-0001")
    assert buckets("req-0001") == (0.8031946088427132, 0.11311247949386412)


@settings(max_examples=25, deadline=None)
@given(share=st.floats(0.0, 0.5), salt=st.text(max_size=8))
def test_exploration_share_is_respected_within_tolerance(share: float, salt: str) -> None:
    controller = Controller(snapshot(exploration_share=share))
    n = 4000
    explored = sum(controller.begin(f"{salt}-{i}", "qa").exploration for i in range(n))
    # 4.5 standard deviations of a binomial: a false failure is ~1e-5 per example.
    tolerance = 4.5 * (share * (1 - share) / n) ** 0.5 + 1 / n
    assert abs(explored / n - share) <= tolerance


@settings(max_examples=25, deadline=None)
@given(share=st.floats(0.001, 1.0), salt=st.text(max_size=8))
def test_canary_share_is_respected_and_independent_of_exploration(share: float, salt: str) -> None:
    controller = Controller(
        snapshot(
            exploration_share=0.2,
            canary_share=share,
            candidate_version=9,
            candidate_segments={"global": seg(0.5)},
        )
    )
    plans = [controller.begin(f"{salt}-{i}", "qa") for i in range(4000)]
    served = [p for p in plans if not p.exploration]
    canary = sum(p.arm == "candidate" for p in served) / len(served)
    tolerance = 4.5 * (share * (1 - share) / len(served)) ** 0.5 + 1 / len(served)
    assert abs(canary - share) <= tolerance


@given(st.text(max_size=64))
def test_bucketing_is_deterministic_and_in_range(request_id: str) -> None:
    first = buckets(request_id)
    assert first == buckets(request_id)
    assert all(0.0 <= u < 1.0 for u in first)


BANDS = LoadBands()


@given(st.sampled_from(["offpeak", "normal", "peak"]), st.floats(0.0, 1.0))
def test_load_mode_changes_only_across_its_bands(current: LoadMode, load: float) -> None:
    mode = next_load_mode(current, load, BANDS)
    if BANDS.offpeak_exit < load < BANDS.peak_exit:
        assert mode == "normal"
    if mode != current:
        if current == "peak":
            assert load < BANDS.peak_exit
        if current == "offpeak":
            assert load > BANDS.offpeak_exit
        if current == "normal":
            assert load >= BANDS.peak_enter or load <= BANDS.offpeak_enter
    assert next_load_mode(mode, load, BANDS) == mode  # the same reading never flips it back


@given(st.lists(st.floats(BANDS.peak_exit, BANDS.peak_enter - 1e-9), max_size=50))
def test_load_hovering_between_peak_bands_never_flaps(loads: list[float]) -> None:
    starts: tuple[LoadMode, ...] = ("normal", "peak")
    for start in starts:
        mode = start
        for load in loads:
            mode = next_load_mode(mode, load, BANDS)
        assert mode == start


def test_load_mode_ignores_nan_and_clamps() -> None:
    assert next_load_mode("peak", float("nan"), BANDS) == "peak"
    assert next_load_mode("normal", 7.0, BANDS) == "peak"
    assert next_load_mode("normal", -1.0, BANDS) == "offpeak"
    assert next_load_mode("peak", 0.0, BANDS) == "offpeak"
