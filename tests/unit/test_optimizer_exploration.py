"""Per-segment exploration shares: the floor only where more samples could not certify more."""

from __future__ import annotations

from pathlib import Path

from pipeline.node.snapshot import compile_snapshot
from pipeline.optimizer import ExplorationBatch, Trajectory, load_spec, optimize
from pipeline.sim import sample_segment, scenario

ROOT = Path(__file__).resolve().parents[2]
BIG, SMALL = "acme/qa/short", "globex/qa/long"


def _batch(key: str, n: int) -> ExplorationBatch:
    scen = scenario("standard")
    return ExplorationBatch.from_trajectories(
        Trajectory(lat.tokens, lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1])
        for lat in sample_segment(scen, key, 3, n)
    )


def test_a_segment_whose_walk_is_done_explores_at_the_floor_the_others_at_the_share() -> None:
    shipped = load_spec(ROOT / "policies" / "earlystop.yaml")
    spec = shipped.model_copy(  # plain thresholds only: a schedule chain's walk is judged alike
        update={
            "exploration_floor": 0.01,
            "max_step": 1.0,
            "schedules": shipped.schedules.model_copy(update={"share": 0.0}),
        }
    )
    samples = {BIG: _batch(BIG, 30_000), SMALL: _batch(SMALL, 100)}
    proposal = optimize(spec, samples)
    body = proposal.body
    assert body.exploration_share == spec.exploration_share
    assert body.segments[BIG].exploration_share == 0.01
    assert body.segments[SMALL].exploration_share is None  # pooled: more samples help
    assert body.segments["global"].exploration_share is None
    snap = compile_snapshot(body, policy_name=spec.name, version=2, source="broker")
    assert snap.resolve(BIG).exploration_share == 0.01
    assert snap.resolve(SMALL).exploration_share == spec.exploration_share
    # Without a floor the policy is what it always was: one share for every segment.
    plain = optimize(spec.model_copy(update={"exploration_floor": None}), samples).body
    assert all(p.exploration_share is None for p in plain.segments.values())


def test_a_walk_that_more_samples_could_extend_keeps_the_share() -> None:
    spec = load_spec(ROOT / "policies" / "earlystop.yaml").model_copy(
        update={"exploration_floor": 0.01, "max_step": 1.0}
    )
    proposal = optimize(spec, {BIG: _batch(BIG, 1_500)})
    normal = proposal.decision(BIG, "normal")
    assert normal.population == BIG and normal.certified
    assert proposal.body.segments[BIG].exploration_share is None


def test_a_key_that_serves_no_early_stop_explores_at_the_ceiling() -> None:
    spec = load_spec(ROOT / "policies" / "earlystop.yaml").model_copy(
        update={"exploration_floor": 0.01, "exploration_ceiling": 0.2, "max_step": 1.0}
    )
    # 30 samples: nothing is certified anywhere, every key serves full generations.
    proposal = optimize(spec, {BIG: _batch(BIG, 30)})
    assert all(d.threshold == 1.0 for d in proposal.decisions)
    assert {p.exploration_share for p in proposal.body.segments.values()} == {0.2}
    assert proposal.body.exploration_share == spec.exploration_share
    # Once the segment stops early somewhere, the ceiling no longer applies to it.
    grown = optimize(spec, {BIG: _batch(BIG, 1_500)})
    assert grown.body.segments[BIG].exploration_share is None
