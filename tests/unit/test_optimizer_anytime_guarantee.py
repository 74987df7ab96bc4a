"""The anytime promise over repeated cycles, on data whose truth is known.

Each seed runs the controller's loop in miniature: every cycle adds fresh
exploration samples to the certificates (:func:`advance`) and proposes a
policy from them. Per (segment, mode) the run *violates* when any cycle
deploys a threshold whose true mean signed EM drop on its population exceeds
epsilon. The share of violating (segment, mode, seed) runs must stay within
delta up to binomial noise, however many cycles look at the data; the same
loop with Learn-then-Test re-run on a sliding window is shown beside it.
Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from pipeline.optimizer import PolicySpec, evaluate, optimize
from pipeline.optimizer.certify import CertificateBook, advance
from pipeline.optimizer.curve import ExplorationBatch
from schemas import LoadMode
from tests.unit._optimizer_data import SegmentModel, binomial_allowance, spec_with

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
MIN_TOKENS = 32
# An over-confident segment whose risk curve crosses epsilon inside the grid, and a
# well-calibrated one: the first is where a careless procedure certifies bad rules.
SCENARIO = {
    "acme/qa/short": SegmentModel(mu=1.0, tau=0.8),
    "globex/math/long": SegmentModel(),
}


@cache
def _true_drop(model: SegmentModel, grid: tuple[float, ...]) -> np.ndarray:
    """Mean signed EM drop per threshold, from a large sample (standard error < 0.001)."""
    curve = evaluate(model.sample(400_000, np.random.default_rng(99)), grid, MIN_TOKENS, 4096)
    return (curve.losses - curve.gains) / curve.n


def _population_drop(population: str, grid: tuple[float, ...]) -> np.ndarray:
    members = [k for k in SCENARIO if population in (k, k.split("/")[1], "global")]
    return np.mean([_true_drop(SCENARIO[k], grid) for k in members], axis=0)


def _cycle_samples(rng: np.random.Generator, n: int) -> dict[str, ExplorationBatch]:
    return {key: model.sample(n, rng) for key, model in SCENARIO.items()}


def _run(spec: PolicySpec, seeds: int, cycles: int, per_cycle: int, window: int) -> float:
    """Share of (segment, mode, seed) runs that ever deployed a bad threshold."""
    grid = spec.thresholds()
    violated = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        book = CertificateBook.empty(spec)
        recent: list[dict[str, ExplorationBatch]] = []
        bad: set[tuple[str, LoadMode]] = set()
        for _ in range(cycles):
            fresh = _cycle_samples(rng, per_cycle)
            if spec.risk.method == "anytime":
                book, _ = advance(book, spec, fresh)
                proposal = optimize(spec, {}, book=book)
            else:  # today's habit: one look at a sliding window, every cycle
                recent = [*recent, fresh][-window:]
                pooled = {k: _concat([c[k] for c in recent]) for k in SCENARIO}
                proposal = optimize(spec, pooled)
            for d in proposal.decisions:
                if d.key in SCENARIO and d.population is not None:
                    j = grid.index(d.threshold)
                    if _population_drop(d.population, grid)[j] > d.epsilon + 1e-3:
                        bad.add((d.key, d.mode))
        violated += len(bad)
    return violated / (seeds * len(SCENARIO) * len(MODES))


def _concat(batches: list[ExplorationBatch]) -> ExplorationBatch:
    width = max(b.tokens.shape[1] for b in batches)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])))

    return ExplorationBatch(
        tokens=np.vstack([pad(b.tokens) for b in batches]),
        confidence=np.vstack([pad(b.confidence) for b in batches]),
        correct=np.vstack([pad(b.correct) for b in batches]),
        length=np.concatenate([b.length for b in batches]),
        full_tokens=np.concatenate([b.full_tokens for b in batches]),
        full_correct=np.concatenate([b.full_correct for b in batches]),
    )


def test_the_signed_promise_holds_over_repeated_cycles() -> None:
    spec = spec_with(
        max_step=1.0, min_samples=200, risk={"method": "anytime", "loss": "signed", "split": "none"}
    )
    seeds = 60
    share = _run(spec, seeds=seeds, cycles=15, per_cycle=150, window=4)
    allowed = binomial_allowance(seeds * len(SCENARIO) * len(MODES), spec.risk.delta)
    print(f"\nanytime, signed: violating share {share:.3f}; allowed {allowed:.3f}")
    assert share <= allowed


@pytest.mark.slow
def test_re_testing_a_sliding_window_violates_more_often_than_the_certificates() -> None:
    # The same loop, one-sided loss for both: re-testing an overlapping window every
    # cycle accumulates its chances to certify a bad rule; the certificates do not.
    seeds, cycles = 60, 30
    ltt = spec_with(max_step=1.0, min_samples=200, risk={"split": "none"})
    anytime = spec_with(
        max_step=1.0,
        min_samples=200,
        risk={"method": "anytime", "loss": "one_sided", "split": "none"},
    )
    old = _run(ltt, seeds=seeds, cycles=cycles, per_cycle=150, window=4)
    new = _run(anytime, seeds=seeds, cycles=cycles, per_cycle=150, window=4)
    allowed = binomial_allowance(seeds * len(SCENARIO) * len(MODES), 0.1)
    print(f"\n{cycles} cycles: window LTT {old:.3f}, anytime {new:.3f}; allowed {allowed:.3f}")
    assert new <= allowed
    assert old > new
