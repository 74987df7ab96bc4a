"""The generative model: deterministic, calibrated in shape, plausible next to real data."""

from __future__ import annotations

import statistics
from itertools import pairwise

import pytest

from pipeline.sim import generate, sample_latent, scenario
from pipeline.sim.answers import normalize
from pipeline.sim.model import request_rng
from schemas import Checkpoint

SCEN = scenario()

# Coarse statistics of data/real/real_trajectories_sample.jsonl (90 requests of
# SmolLM2-135M, llama.cpp, checkpoints every 8 tokens), computed once:
REAL_MEAN_CONF = 0.674
REAL_SD_CONF = 0.161
REAL_FIRST_CONF = 0.500
REAL_SHARE_DECREASING = 0.404  # steps where confidence falls
REAL_SHARE_ANSWER_CHANGES = 0.629  # steps where the trial answer changes


def _sample(n: int = 3000, seed: int = 0) -> list:
    return [generate(SCEN, seed, i) for i in range(n)]


def test_same_seed_same_requests_other_seed_differs() -> None:
    a = [generate(SCEN, 7, i) for i in range(200)]
    b = [generate(SCEN, 7, i) for i in range(200)]
    c = [generate(SCEN, 8, i) for i in range(200)]
    assert a == b
    assert [r.latent for r in a] != [r.latent for r in c]


def test_request_does_not_depend_on_what_was_drawn_before() -> None:
    alone = generate(SCEN, 3, 1234)
    _ = [generate(SCEN, 3, i) for i in range(50)]
    assert generate(SCEN, 3, 1234) == alone


def test_a_smaller_budget_only_cuts_the_trajectory() -> None:
    spec = SCEN.spec("acme/math/long")
    for i in range(300):
        full = sample_latent(spec, 16, 4096, request_rng(0, i, "t"))
        cut = sample_latent(spec, 16, 64, request_rng(0, i, "t"))
        assert cut.tokens[-1] <= 64
        prefix = len(cut.tokens) - 1
        assert cut.tokens[:prefix] == full.tokens[:prefix]
        assert cut.confidence[:prefix] == full.confidence[:prefix]
        assert cut.correct[:prefix] == full.correct[:prefix]


def test_trajectories_satisfy_the_contract() -> None:
    for req in _sample(500):
        points = req.trajectory()
        assert all(isinstance(p, Checkpoint) for p in points)
        assert all(a.tokens < b.tokens for a, b in pairwise(points))
        assert points[-1].tokens <= req.token_budget
        assert 1 <= len(points) <= 512
        assert req.full_correct == (normalize(points[-1].answer) == normalize(req.gold))


def test_answer_strings_match_correctness_under_normalisation() -> None:
    for req in _sample(500):
        for answer, right in zip(req.answers, req.latent.correct, strict=True):
            assert (normalize(answer) == normalize(req.gold)) == right


def test_natural_end_before_budget_happens_sometimes_not_always() -> None:
    ends = [req.latent.natural_end for req in _sample(2000)]
    assert 0.3 < statistics.mean(ends) < 0.98


def test_confidence_rises_along_the_trajectory_on_average() -> None:
    long = [r for r in _sample(3000) if len(r.latent.tokens) >= 8]
    by_step = [statistics.mean(r.latent.confidence[i] for r in long) for i in range(8)]
    assert by_step[-1] > by_step[0] + 0.1
    assert by_step[4] > by_step[0]


def test_higher_confidence_means_higher_accuracy() -> None:
    points = [
        (c, ok)
        for r in _sample(3000)
        for c, ok in zip(r.latent.confidence, r.latent.correct, strict=True)
    ]
    bands = [(0.0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.0)]
    accuracy = [statistics.mean(ok for c, ok in points if lo <= c < hi) for lo, hi in bands]
    assert accuracy == sorted(accuracy)
    assert accuracy[-1] > accuracy[0] + 0.5
    # Imperfect calibration: at 0.8-0.9 confidence the trial answer is right far less often.
    assert accuracy[2] < 0.8


def test_segments_differ_in_difficulty_and_calibration() -> None:
    reqs = _sample(6000)

    def full_em(key: str) -> float:
        return statistics.mean(r.full_correct for r in reqs if r.spec.key == key)

    def mean_conf(key: str) -> float:
        return statistics.mean(c for r in reqs if r.spec.key == key for c in r.latent.confidence)

    assert full_em("acme/qa/short") > full_em("globex/math/long") + 0.15
    assert mean_conf("globex/math/short") > mean_conf("acme/extract/short") + 0.08


def test_simulated_trajectories_resemble_the_real_sample() -> None:
    trajs = [list(zip(r.latent.confidence, r.answers, strict=True)) for r in _sample(3000)]
    confs = [c for t in trajs for c, _ in t]
    steps = [(a, b) for t in trajs for a, b in pairwise(t)]
    assert all(0.0 <= c <= 1.0 for c in confs)
    assert statistics.mean(confs) == pytest.approx(REAL_MEAN_CONF, abs=0.1)
    assert statistics.pstdev(confs) == pytest.approx(REAL_SD_CONF, abs=0.08)
    assert statistics.mean(t[0][0] for t in trajs) == pytest.approx(REAL_FIRST_CONF, abs=0.1)
    # Noisy, not monotone, and trial answers move around, as real ones do.
    decreasing = statistics.mean(b[0] < a[0] for a, b in steps)
    changes = statistics.mean(b[1] != a[1] for a, b in steps)
    assert decreasing == pytest.approx(REAL_SHARE_DECREASING, abs=0.15)
    assert changes == pytest.approx(REAL_SHARE_ANSWER_CHANGES, abs=0.3)


def test_drift_changes_the_segment_only_from_its_start_index() -> None:
    drift = scenario("drift", drift_at=100)
    key = "acme/qa/short"
    assert drift.spec_at(key, 99) == SCEN.spec(key)
    after = drift.spec_at(key, 100)
    assert after.difficulty > SCEN.spec(key).difficulty
    assert after.conf_bias > SCEN.spec(key).conf_bias
    assert drift.spec_at("acme/qa/long", 10_000) == SCEN.spec("acme/qa/long")
    assert drift.model_at(99) != drift.model_at(100)
    assert generate(drift, 1, 50) == generate(SCEN, 1, 50)


def test_unknown_drift_segment_is_refused() -> None:
    with pytest.raises(KeyError):
        scenario("drift", drift_segment="nobody/qa/short")
