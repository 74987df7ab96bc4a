"""Always-valid guardrail tests: error rates under the null, power against real harm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.optimizer import canary_verdict, guardrail_verdict, log_wealth, paired_differences
from tests.unit._optimizer_data import binomial_allowance, spec_with

RUNS = 2000
PAIRS = 5000
ALPHA = 0.05
MARGIN = 0.02


def _pairs(rng: np.random.Generator, p_production: float, p_canary: float) -> np.ndarray:
    """Pair differences (production - canary EM) for RUNS runs of PAIRS pairs."""
    production = rng.random((RUNS, PAIRS)) < p_production
    canary = rng.random((RUNS, PAIRS)) < p_canary
    return production.astype(float) - canary.astype(float)


def _ever_crosses(log_w: np.ndarray, level: float) -> np.ndarray:
    return (log_w >= math.log(level)).any(axis=-1)


def test_false_rollbacks_stay_below_alpha_however_often_one_looks() -> None:
    # The hardest null: the canary is worse by exactly the margin. Checked after every pair.
    d = _pairs(np.random.default_rng(1), 0.8, 0.8 - MARGIN)
    harm = log_wealth(d - MARGIN, -1.0 - MARGIN)
    rate = _ever_crosses(harm, 1 / ALPHA).mean()
    print(f"\nfalse rollback share {rate:.4f} (alpha {ALPHA})")
    assert rate <= binomial_allowance(RUNS, ALPHA)


def test_false_promotions_stay_below_alpha() -> None:
    d = _pairs(np.random.default_rng(2), 0.8, 0.8 - MARGIN)
    safe = log_wealth(MARGIN - d, MARGIN - 1.0)
    rate = _ever_crosses(safe, 1 / ALPHA).mean()
    print(f"\nfalse promotion share {rate:.4f} (alpha {ALPHA})")
    assert rate <= binomial_allowance(RUNS, ALPHA)


def test_a_real_em_drop_is_caught_quickly() -> None:
    d = _pairs(np.random.default_rng(3), 0.8, 0.7)
    harm = log_wealth(d - MARGIN, -1.0 - MARGIN)
    hits = harm >= math.log(1 / ALPHA)
    caught = hits.any(axis=1)
    when = np.where(caught, hits.argmax(axis=1), PAIRS)
    print(f"\n10-point EM drop: caught in {caught.mean():.3f}, median pairs {np.median(when)}")
    assert caught.mean() >= 0.99
    assert np.median(when) < 1000


def test_a_harmless_canary_is_promoted_and_not_rolled_back() -> None:
    d = _pairs(np.random.default_rng(4), 0.8, 0.8)
    safe = log_wealth(0.05 - d, 0.05 - 1.0)
    harm = log_wealth(d - 0.05, -1.05)
    assert _ever_crosses(safe, 1 / ALPHA).mean() >= 0.95
    assert _ever_crosses(harm, 1 / ALPHA).mean() <= ALPHA


@given(st.lists(st.floats(-1, 1), min_size=2, max_size=30), st.integers(0, 29))
def test_bets_are_predictable(xs: list[float], cut: int) -> None:
    # Wealth up to step t must not depend on anything after it.
    x = np.array(xs)
    cut = min(cut, len(xs) - 1)
    changed = x.copy()
    changed[cut:] = -changed[cut:]
    a, b = log_wealth(x, -1.0), log_wealth(changed, -1.0)
    assert np.array_equal(a[:cut], b[:cut])
    assert np.all(np.isfinite(a))


def test_paired_differences_point_toward_harm() -> None:
    em = paired_differences([1, 0, 1], [1, 1, 1, 0], harm="decrease")
    assert em.tolist() == [0.0, 1.0, 0.0]
    fb = paired_differences([1, 0], [0, 0], harm="increase")
    assert fb.tolist() == [1.0, 0.0]


def _verdict_inputs(rng: np.random.Generator, n: int, p_canary: float) -> dict[str, np.ndarray]:
    production = (rng.random(n) < 0.8).astype(float)
    canary = (rng.random(n) < p_canary).astype(float)
    return {"em": paired_differences(canary, production, harm="decrease")}


def test_verdicts() -> None:
    rng = np.random.default_rng(5)
    margins = {"em": 0.05}
    bad = canary_verdict(_verdict_inputs(rng, 3000, 0.6), margins, alpha=0.05, min_samples=100)
    assert bad.action == "rollback" and "em difference" in bad.reason
    good_pairs = _verdict_inputs(rng, 3000, 0.8)
    good = canary_verdict(good_pairs, margins, alpha=0.05, min_samples=100)
    assert good.action == "promote"
    waiting = canary_verdict(good_pairs, margins, alpha=0.05, min_samples=5000)
    assert waiting.action == "continue"
    few = {"em": good_pairs["em"][:20]}
    timeout = canary_verdict(few, margins, alpha=0.05, min_samples=10, max_samples=20)
    assert timeout.action == "rollback" and "inconclusive" in timeout.reason
    empty = canary_verdict({"em": np.array([])}, margins, alpha=0.05, min_samples=1)
    assert empty.action == "continue" and empty.evidence[0].pairs == 0


def test_any_breached_guardrail_rolls_back_from_the_spec() -> None:
    spec = spec_with(canary={"min_samples": 200, "max_samples": None})
    rng = np.random.default_rng(6)
    n = 4000
    em = ((rng.random(n) < 0.8).astype(float), (rng.random(n) < 0.8).astype(float))
    tokens = (np.full(n, 0.2), np.full(n, 0.3))  # canary uses fewer tokens
    feedback_bad = ((rng.random(n) < 0.10).astype(float), (rng.random(n) < 0.02).astype(float))
    feedback_ok = ((rng.random(n) < 0.02).astype(float), (rng.random(n) < 0.02).astype(float))
    verdict = guardrail_verdict(spec, em=em, tokens=tokens, negative_feedback=feedback_bad)
    assert verdict.action == "rollback" and "negative_feedback" in verdict.reason
    ok = guardrail_verdict(spec, em=em, tokens=tokens, negative_feedback=feedback_ok)
    assert ok.action in {"promote", "continue"}
    assert {e.metric for e in ok.evidence} == {"em", "tokens", "negative_feedback"}
    with pytest.raises(ValueError, match="tokens"):
        guardrail_verdict(spec, em=em, tokens=(np.full(n, 2.0), np.zeros(n)))
