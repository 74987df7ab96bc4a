"""One optimizer cycle: fallback, risk split, step limit, the record, review."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.optimizer import (
    ExplorationBatch,
    OptimizerError,
    Proposal,
    current_threshold,
    evaluate,
    limit_step,
    optimize,
    pareto_front,
    review_reasons,
)
from schemas import LoadMode, PolicyBody, SegmentPolicy
from tests.unit._optimizer_data import SegmentModel, spec_with

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
EASY = SegmentModel(mu=-0.5, beta=1.0, sigma=0.5)
HARD = SegmentModel(mu=1.0, tau=0.8)
SPEC = spec_with(min_samples=400, max_step=1.0, auto_approve={"max_step": 0.02})


def _samples(
    sizes: dict[str, int], seed: int = 0, model: SegmentModel = EASY
) -> dict[str, ExplorationBatch]:
    rng = np.random.default_rng(seed)
    return {key: model.sample(n, rng) for key, n in sizes.items()}


def _body(thresholds: dict[str, float]) -> PolicyBody:
    return PolicyBody(
        segments={
            key: SegmentPolicy(
                thresholds=dict.fromkeys(MODES, value), min_tokens=32, token_budget=4096
            )
            for key, value in thresholds.items()
        },
        exploration_share=0.05,
    )


def test_keys_fall_back_to_task_then_global_with_pooled_guarantees() -> None:
    sizes = {"acme/qa/short": 1000, "acme/math/short": 300, "b/math/long": 200, "c/code/long": 50}
    proposal = optimize(SPEC, _samples(sizes))
    d = proposal.decision("acme/qa/short", "normal")
    assert (d.population, d.fell_back, d.guarantee, d.samples) == (
        "acme/qa/short",
        False,
        "segment",
        1000,
    )
    d = proposal.decision("b/math/long", "normal")
    assert (d.population, d.fell_back, d.guarantee) == ("math", True, "pooled")
    assert (d.samples, d.population_samples) == (200, 500)
    d = proposal.decision("c/code/long", "peak")
    assert (d.population, d.guarantee, d.population_samples) == ("global", "pooled", 1550)
    assert proposal.decision("code", "peak").population == "global"
    # Tests per mode: acme/qa/short, qa, math, global (code and c/code/long reuse global's).
    assert proposal.tests == {"offpeak": 4, "normal": 4, "peak": 4}
    assert d.delta == pytest.approx(SPEC.risk.delta / 4)
    assert set(proposal.pareto) == {"acme/qa/short", "qa", "math", "global"}
    assert set(proposal.body.segments) == {
        "acme/qa/short", "acme/math/short", "b/math/long", "c/code/long",
        "qa", "math", "code", "global",
    }  # fmt: skip


def test_no_population_large_enough_means_the_safe_default() -> None:
    proposal = optimize(SPEC, _samples({"acme/qa/short": 100}))
    for d in proposal.decisions:
        assert (d.threshold, d.certified, d.guarantee, d.population) == (1.0, False, "none", None)
    assert proposal.tests == {"offpeak": 0, "normal": 0, "peak": 0}
    assert proposal.decision("acme/qa/short", "normal").samples == 100


@pytest.mark.parametrize(
    ("split", "divisor"), [("none", 1), ("segments", 4), ("segments_and_modes", 12)]
)
def test_delta_is_split_as_the_spec_says(split: str, divisor: int) -> None:
    spec = spec_with(min_samples=400, max_step=1.0, risk={"split": split})
    proposal = optimize(spec, _samples({"acme/qa/short": 500, "acme/qa/long": 500}))
    # Four populations per mode: the two leaves, qa and global (same data, distinct keys).
    assert proposal.tests == {"offpeak": 4, "normal": 4, "peak": 4}
    for d in proposal.decisions:
        assert d.delta == pytest.approx(spec.risk.delta / divisor)


def test_a_tenant_override_is_its_own_test_on_pooled_data() -> None:
    spec = spec_with(
        min_samples=400, max_step=1.0, tolerance={"tenants": {"strict": 0.005}, "segments": {}}
    )
    proposal = optimize(spec, _samples({"acme/qa/short": 900, "strict/qa/short": 100}))
    strict = proposal.decision("strict/qa/short", "peak")
    assert (strict.population, strict.epsilon) == ("qa", 0.005)
    assert strict.threshold >= proposal.decision("qa", "peak").threshold
    assert proposal.tests["peak"] == 4  # acme leaf, qa @ 0.04, qa @ 0.005, global


def test_the_step_limit_binds_only_toward_early_stopping() -> None:
    spec = spec_with(min_samples=400, max_step=0.05, auto_approve={"max_step": 0.02})
    samples = _samples({"acme/qa/short": 3000})
    free = optimize(spec.model_copy(update={"max_step": 1.0}), samples)
    target = free.decision("acme/qa/short", "peak").threshold
    assert target < 0.9
    limited = optimize(spec, samples, _body({"global": 0.95}))
    d = limited.decision("acme/qa/short", "peak")
    assert (d.threshold, d.proposed, d.step_limited, d.certified) == (0.9, target, True, True)
    # From a riskier current threshold the whole way back is one step.
    safer = optimize(spec, samples, _body({"global": 0.5, "acme/qa/short": 0.3}))
    d = safer.decision("acme/qa/short", "offpeak")
    assert d.current == 0.3 and d.threshold == d.proposed > 0.5
    assert not d.step_limited


def test_limit_step_snaps_to_the_grid() -> None:
    grid = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert limit_step(grid, 0, 0.95, 0.2) == 3  # 0.75 floor -> 0.8
    assert limit_step(grid, 0, 0.9, 0.2) == 2  # 0.7 exactly, despite float noise
    assert limit_step(grid, 4, 0.5, 0.01) == 4  # safer: unlimited
    assert limit_step(grid, 0, 1.0, 0.01) == 5


def test_current_threshold_follows_the_lookup_chain() -> None:
    body = PolicyBody(
        segments={
            "global": SegmentPolicy(
                thresholds={"normal": 0.9, "peak": 0.8}, min_tokens=1, token_budget=9
            ),
            "qa": SegmentPolicy(thresholds={"normal": 0.7}, min_tokens=1, token_budget=9),
        },
        exploration_share=0.0,
    )
    assert current_threshold(body, "acme/qa/long", "peak") == 0.7  # qa has no peak: its normal
    assert current_threshold(body, "acme/math/long", "peak") == 0.8
    assert current_threshold(body, "math", "offpeak") == 0.9


def test_levels_limit_the_written_keys_and_dropped_keys_need_review() -> None:
    spec = spec_with(min_samples=400, max_step=1.0, segments={"levels": ["task", "global"]})
    current = _body({"global": 1.0, "acme/qa/short": 1.0})
    proposal = optimize(spec, _samples({"acme/qa/short": 800}), current)
    assert set(proposal.body.segments) == {"qa", "global"}
    assert proposal.dropped == ("acme/qa/short",)
    assert any("drops keys" in reason for reason in review_reasons(proposal, spec))


def test_review_reasons() -> None:
    samples = _samples({"acme/qa/short": 3000})
    big = optimize(SPEC, samples)
    reasons = review_reasons(big, SPEC)
    assert any("step" in r and "exceeds 0.02" in r for r in reasons)
    few = review_reasons(optimize(SPEC, _samples({"acme/qa/short": 500})), SPEC)
    assert any("500 samples, 1000 needed" in r for r in few)
    small = spec_with(min_samples=400, max_step=0.02, auto_approve={"min_samples": 100})
    assert review_reasons(optimize(small, samples), small) == ()
    # A proposal that only moves toward safety never needs review.
    back = optimize(SPEC, _samples({"acme/qa/short": 10}), _body({"global": 0.6}))
    assert all(d.threshold == 1.0 for d in back.decisions)
    assert review_reasons(back, SPEC) == ()


def test_bad_input_is_refused() -> None:
    with pytest.raises(OptimizerError, match="tenant/task/length_bucket"):
        optimize(SPEC, {"qa": ExplorationBatch.from_trajectories([])})
    with pytest.raises(OptimizerError, match="tenant/task/length_bucket"):
        optimize(SPEC, {"a/b/huge": ExplorationBatch.from_trajectories([])})
    curve = evaluate(ExplorationBatch.from_trajectories([]), (0.5, 1.0), 0, 10)
    with pytest.raises(OptimizerError, match="grid"):
        optimize(SPEC, {"a/b/short": curve})


def test_curves_and_batches_give_the_same_proposal() -> None:
    samples = _samples({"acme/qa/short": 600, "b/qa/long": 100})
    curves = {key: evaluate(batch, SPEC.thresholds(), 32, 4096) for key, batch in samples.items()}
    assert optimize(SPEC, samples) == optimize(SPEC, curves)


def test_the_proposal_round_trips_as_json() -> None:
    proposal = optimize(SPEC, _samples({"acme/qa/short": 600}))
    assert Proposal.model_validate_json(proposal.model_dump_json()) == proposal


def test_pareto_data() -> None:
    proposal = optimize(SPEC, _samples({"acme/qa/short": 2000}, model=HARD))
    points = proposal.pareto["acme/qa/short"]
    assert [p.threshold for p in points] == list(SPEC.thresholds())
    assert points[-1].token_saving == 0.0 and points[-1].em_drop == 0.0
    front = pareto_front(points)
    assert front[0].threshold == 1.0 and len(front) > 5
    for a, b in zip(front, front[1:], strict=False):
        assert a.token_saving < b.token_saving and a.em_drop < b.em_drop
    for p in points:
        assert any(q.token_saving >= p.token_saving and q.em_drop <= p.em_drop for q in front)


sizes = st.dictionaries(
    st.sampled_from(["a/qa/short", "a/qa/long", "b/qa/short", "b/math/long", "c/code/medium"]),
    st.integers(0, 700),
    min_size=1,
    max_size=4,
)
grid_values = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    sizes,
    st.integers(0, 10_000),
    st.integers(50, 600),
    st.sampled_from([0.01, 0.03, 0.05, 0.2]),
    st.dictionaries(st.sampled_from(["global", "qa", "a/qa/short", "math"]), grid_values),
    st.booleans(),
)
def test_invariants_of_any_cycle(
    sizes: dict[str, int],
    seed: int,
    min_samples: int,
    max_step: float,
    current: dict[str, float],
    hard: bool,
) -> None:
    spec = spec_with(min_samples=min_samples, max_step=max_step, auto_approve={"max_step": 0.0})
    body = _body({"global": 1.0, **current})
    samples = _samples(sizes, seed, HARD if hard else EASY)
    proposal = optimize(spec, samples, body)
    grid = spec.thresholds()
    assert "global" in proposal.body.segments
    for d in proposal.decisions:
        assert d.threshold in grid and 0.0 <= d.threshold <= 1.0
        assert d.current == current_threshold(body, d.key, d.mode)
        assert proposal.body.segments[d.key].thresholds[d.mode] == d.threshold
        # The step limit: toward early stopping by at most max_step, toward safety freely.
        assert d.threshold >= d.current - max_step - 1e-9 or d.threshold == d.proposed
        assert d.threshold >= d.proposed
        # Fallback exactly when the key's own population is too small.
        own = sizes.get(d.key) if d.key.count("/") == 2 else None
        if own is not None:
            assert d.fell_back == (own < min_samples)
        if d.population is not None:
            assert proposal.pareto[d.population][0].n >= min_samples
        # Anything below 1.0 is certified at the recorded level, and the bound agrees.
        if d.threshold < 1.0:
            assert d.certified and d.guarantee in {"segment", "pooled"}
            assert d.em_drop_bound <= d.epsilon + 1e-9


@settings(max_examples=25, deadline=None)
@given(sizes, st.integers(0, 10_000), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_fewer_losses_never_make_a_threshold_safer(
    sizes: dict[str, int], seed: int, share: float, flip_seed: int
) -> None:
    samples = _samples(sizes, seed, HARD)
    rng = np.random.default_rng(flip_seed)
    fixed = {}
    for key, batch in samples.items():
        # Make some requests' early answers all right: losses can only go down, pointwise.
        chosen = rng.random(len(batch)) < share
        correct = batch.correct | chosen[:, None]
        fixed[key] = ExplorationBatch(
            batch.tokens.copy(),
            batch.confidence.copy(),
            correct,
            batch.length.copy(),
            batch.full_tokens.copy(),
            batch.full_correct.copy(),
        )
    spec = spec_with(min_samples=200, max_step=0.05)
    body = _body({"global": 0.97, "qa": 0.93})
    before, after = optimize(spec, samples, body), optimize(spec, fixed, body)
    for a, b in zip(before.decisions, after.decisions, strict=True):
        assert (a.key, a.mode) == (b.key, b.mode)
        assert b.threshold <= a.threshold


def test_the_registry_handover_carries_metrics_frontiers_and_review() -> None:
    from pipeline.controller.handover import spec_digest, to_registry

    proposal = optimize(SPEC, _samples({"acme/qa/short": 3000, "b/qa/long": 50}))
    handed = to_registry(proposal, SPEC)
    assert handed.body == proposal.body and handed.policy_name == "default"
    assert handed.review.auto_approve is False and "exceeds 0.02" in handed.review.reason
    assert handed.params["spec_sha256"] == spec_digest(SPEC)
    row = handed.segment_metrics["b/qa/long"]
    assert row["fell_back"] == 1.0 and row["samples"] == 50.0
    assert row["normal_threshold"] == proposal.decision("b/qa/long", "normal").threshold
    leaf = handed.pareto["acme/qa/short"]
    assert leaf.chosen == proposal.decision("acme/qa/short", "normal").threshold
    assert len(leaf.points) == len(SPEC.thresholds())
    assert 0.0 <= handed.metrics["normal_certified_share"] <= 1.0
