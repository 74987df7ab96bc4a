"""The guarantee, on data whose truth is known: P(true EM drop > epsilon) <= delta.

Each run draws fresh exploration samples from :mod:`tests.unit._optimizer_data`
with its own seed, runs a full optimizer cycle, and checks the chosen
thresholds against the exact EM drop of their (possibly pooled) population.
The share of runs with a violation must stay within delta, up to the 99%
upper quantile of Binomial(runs, delta) / runs (the stated tolerance). Savings
are reported against the oracle: the threshold the same walk reaches on the
true curve. Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from pipeline.optimizer import PolicySpec, evaluate, optimize
from schemas import LoadMode
from tests.unit._optimizer_data import SegmentModel, binomial_allowance, spec_with, true_oracle

SEEDS = 200
MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
MIN_TOKENS = 32
BASE = SegmentModel()
OVERCONFIDENT = SegmentModel(mu=1.0, tau=0.8)
SHARP = SegmentModel(mu=-0.5, beta=1.0, sigma=0.5)


@dataclass(frozen=True)
class Truth:
    drop: np.ndarray
    saving: np.ndarray


@cache
def _truth(model: SegmentModel, grid: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    return model.truth(grid, MIN_TOKENS)


def _population_truth(
    scenario: dict[str, tuple[SegmentModel, int]], grid: tuple[float, ...]
) -> dict[str, Truth]:
    """Exact curves of every leaf and of every pooled population (weighted by sample size)."""
    members: dict[str, list[str]] = {"global": list(scenario)}
    for key in scenario:
        members.setdefault(key.split("/")[1], []).append(key)
        members[key] = [key]
    truth = {}
    for pop, keys in members.items():
        weights = np.array([scenario[k][1] for k in keys], dtype=float)
        drops = np.array([_truth(scenario[k][0], grid)[0] for k in keys])
        tokens = np.array([_truth(scenario[k][0], grid)[1] for k in keys])
        pooled_tokens = weights @ tokens
        truth[pop] = Truth(weights @ drops / weights.sum(), 1.0 - pooled_tokens / pooled_tokens[-1])
    return truth


def _run(
    spec: PolicySpec, scenario: dict[str, tuple[SegmentModel, int]], seeds: int
) -> tuple[dict[LoadMode, float], list[float], float]:
    """Violation share per mode, saving/oracle ratios, and the allowed share."""
    grid = spec.thresholds()
    truth = _population_truth(scenario, grid)
    violated = dict.fromkeys(MODES, 0)
    ratios: list[float] = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        samples = {key: model.sample(n, rng) for key, (model, n) in scenario.items()}
        proposal = optimize(spec, samples)
        for mode in MODES:
            bad = False
            for d in proposal.decisions:
                if d.mode != mode or d.population is None:
                    continue
                j = grid.index(d.threshold)
                true = truth[d.population]
                bad |= bool(true.drop[j] > d.epsilon)
                best = true_oracle(true.drop, d.epsilon)
                # One ratio per tested population (keys that fell back repeat their parent's).
                if d.key == d.population and best is not None and true.saving[best] > 0:
                    ratios.append(float(true.saving[j] / true.saving[best]))
            violated[mode] += bad
    rates = {mode: count / seeds for mode, count in violated.items()}
    return rates, ratios, binomial_allowance(seeds, spec.risk.delta)


def _report(title: str, rates: dict[LoadMode, float], ratios: list[float], allowed: float) -> None:
    shown = ", ".join(f"{mode} {rate:.3f}" for mode, rate in rates.items())
    print(  # the numbers are the point of this test
        f"\n{title}: violation share {shown}; allowed {allowed:.3f}; "
        f"saving vs oracle mean {np.mean(ratios):.3f} (min {np.min(ratios):.3f}, n={len(ratios)})"
    )


def test_the_exact_truth_matches_a_large_sample() -> None:
    grid = spec_with().thresholds()
    for model in (BASE, OVERCONFIDENT, SHARP):
        drop, tokens = _truth(model, grid)
        curve = evaluate(model.sample(100_000, np.random.default_rng(7)), grid, MIN_TOKENS, 4096)
        se = np.sqrt(np.maximum(drop * (1 - drop), 1e-6) / curve.n)
        assert np.max(np.abs(curve.em_drop() - drop) / se) < 4.5
        assert np.allclose(curve.tokens_used / curve.n, tokens, rtol=0.01)
        assert np.all(np.diff(drop) <= 1e-12) and drop[-1] == 0.0


@pytest.mark.parametrize("method", ["binomial", "hoeffding_bentkus"])
def test_guarantee_on_one_segment(method: str) -> None:
    # No split, so each load mode's single test runs at the full delta: the tightest case.
    spec = spec_with(max_step=1.0, risk={"split": "none", "p_value": method})
    rates, ratios, allowed = _run(spec, {"acme/qa/short": (BASE, 1000)}, SEEDS)
    _report(f"one segment, {method}", rates, ratios, allowed)
    assert all(rate <= allowed for rate in rates.values())
    assert np.mean(ratios) > (0.85 if method == "binomial" else 0.75)


@pytest.mark.slow
def test_guarantee_across_segments_with_fallback() -> None:
    # The shipped spec: delta split over each mode's tests; small segments pooled.
    spec = spec_with(max_step=1.0)
    scenario = {
        "acme/qa/short": (BASE, 1500),
        "acme/qa/long": (OVERCONFIDENT, 1500),
        "globex/qa/short": (SHARP, 1000),
        "acme/math/short": (BASE, 300),  # with the next: math pools 450 samples
        "globex/math/medium": (OVERCONFIDENT, 150),
        "initech/code/long": (SHARP, 100),  # code is too small: global
    }
    rates, ratios, allowed = _run(spec, scenario, SEEDS)
    _report("six segments with fallback", rates, ratios, allowed)
    assert all(rate <= allowed for rate in rates.values())
    assert np.mean(ratios) > 0.7


def test_more_data_is_never_less_safe_in_expectation() -> None:
    spec = spec_with(max_step=1.0, risk={"split": "none"})
    grid = spec.thresholds()
    drop, tokens = _truth(BASE, grid)
    saving = 1.0 - tokens / tokens[-1]
    epsilon = spec.load_modes.normal.epsilon
    seeds = 80
    means = []
    for n in (400, 1200, 3600):
        chosen = []
        for seed in range(seeds):
            sample = {"acme/qa/short": BASE.sample(n, np.random.default_rng(10_000 + seed))}
            chosen.append(
                grid.index(optimize(spec, sample).decision("acme/qa/short", "normal").threshold)
            )
        idx = np.array(chosen)
        assert drop[idx].mean() <= epsilon
        assert np.mean(drop[idx] > epsilon) <= binomial_allowance(seeds, spec.risk.delta)
        means.append(saving[idx].mean())
    print(f"\nmean true saving at n = 400, 1200, 3600: {np.round(means, 4)}")
    # More data buys more saving (power), never at the price of the guarantee above.
    assert means == sorted(means)
