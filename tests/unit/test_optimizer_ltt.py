"""P-values, bounds and the fixed-sequence test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.optimizer import (
    Curve,
    binomial_p_value,
    clopper_pearson_upper,
    empirical_oracle,
    hoeffding_bentkus_p_value,
    learn_then_test,
    min_certifiable_samples,
)
from pipeline.optimizer.ltt import PValueMethod


def _curve(losses: list[int], n: int) -> Curve:
    grid = tuple(round(0.5 + 0.5 * j / (len(losses) - 1), 4) for j in range(len(losses)))
    counts = np.array(losses, dtype=np.int64)
    zeros = np.zeros(len(losses), dtype=np.int64)
    return Curve(grid, n, counts, zeros, zeros, n * 100, n * 200, n)


@given(st.integers(1, 3000), st.floats(0.001, 0.3), st.floats(0.001, 0.5))
def test_clopper_pearson_is_dual_to_the_binomial_test(n: int, eps: float, alpha: float) -> None:
    for k in {0, n // 100, n // 20, n // 5}:
        p = float(binomial_p_value(np.array([k]), n, eps)[0])
        bound = clopper_pearson_upper(k, n, alpha)
        if abs(p - alpha) > 1e-9 and abs(bound - eps) > 1e-9:
            assert (p <= alpha) == (bound <= eps)


@settings(deadline=None)
@given(st.integers(1, 3000), st.floats(0.001, 0.3))
def test_hoeffding_bentkus_is_valid_and_looser(n: int, eps: float) -> None:
    k = np.arange(0, n + 1, max(1, n // 50))
    exact = binomial_p_value(k, n, eps)
    hb = hoeffding_bentkus_p_value(k, n, eps)
    assert np.all(hb >= exact - 1e-12)
    assert np.all((hb >= 0) & (hb <= 1))


def test_binomial_p_values_are_super_uniform_under_the_null() -> None:
    # At risk exactly epsilon (the hardest null), P(p <= delta) <= delta.
    rng = np.random.default_rng(0)
    k = rng.binomial(500, 0.02, size=50_000)
    p = binomial_p_value(k, 500, 0.02)
    for delta in (0.01, 0.05, 0.1):
        assert np.mean(p <= delta) <= delta


def test_no_data_certifies_nothing() -> None:
    result = learn_then_test(_curve([0, 0, 0], 0), 0.05, 0.1)
    assert result.index is None
    # 1.0 is off (risk 0 by construction): the walk starts at the safest threshold below it.
    assert result.tested == (0.75,) and result.p_values == (1.0,)
    assert clopper_pearson_upper(0, 0, 0.1) == 1.0
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0
    assert empirical_oracle(_curve([0, 0, 0], 0), 0.05) is None


def test_the_walk_stops_at_the_first_failure() -> None:
    # Loss rates by threshold 0.5 .. 1.0: 2% (certifiable), 10% (not), then 0%.
    curve = _curve([20, 100, 0, 0, 0, 0], 1000)
    result = learn_then_test(curve, 0.05, 0.1)
    assert result.index == 2
    assert result.tested == (0.9, 0.8, 0.7, 0.6)  # 1.0 is off: never tested
    assert result.p_values[-1] > 0.1 >= max(result.p_values[:-1])
    assert result.certified(2) and result.certified(5) and not result.certified(1)
    # The walk never jumps the gap even though 0.5 alone would pass.
    assert empirical_oracle(curve, 0.05) == 2


def test_min_certifiable_samples() -> None:
    n = min_certifiable_samples(0.02, 0.1)
    assert stats.binom.cdf(0, n, 0.02) <= 0.1 < stats.binom.cdf(0, n - 1, 0.02)
    curve = _curve([0, 0], n - 1)
    assert learn_then_test(curve, 0.02, 0.1).index is None
    assert learn_then_test(_curve([0, 0], n), 0.02, 0.1).index == 0


@given(
    st.lists(st.integers(0, 200), min_size=2, max_size=12),
    st.lists(st.integers(0, 200), min_size=12, max_size=12),
    st.sampled_from(["binomial", "hoeffding_bentkus"]),
)
def test_fewer_losses_never_give_a_safer_choice(
    losses: list[int], fewer: list[int], method: PValueMethod
) -> None:
    n = 1000
    reduced = [max(0, a - b) for a, b in zip(losses, fewer, strict=False)]
    worse = learn_then_test(_curve(losses, n), 0.05, 0.1, method)
    better = learn_then_test(_curve(reduced, n), 0.05, 0.1, method)
    last = len(losses) - 1
    w = last + 1 if worse.index is None else worse.index
    b = last + 1 if better.index is None else better.index
    assert b <= w


@pytest.mark.parametrize("method", ["binomial", "hoeffding_bentkus"])
def test_more_data_at_the_same_rates_never_gives_a_safer_choice(method: PValueMethod) -> None:
    rates = [0.2, 0.08, 0.04, 0.02, 0.01, 0.0]
    chosen = []
    for n in (200, 400, 800, 1600, 3200, 6400):
        curve = _curve([round(r * n) for r in rates], n)
        result = learn_then_test(curve, 0.05, 0.1, method)
        chosen.append(len(rates) if result.index is None else result.index)
    assert chosen == sorted(chosen, reverse=True)
    assert chosen[-1] == 2


@settings(deadline=None)
@given(
    st.integers(1, 2000),
    st.lists(st.floats(0.0, 0.2), min_size=2, max_size=12),
    st.integers(2, 5),
    st.sampled_from(["binomial", "hoeffding_bentkus"]),
    st.sampled_from([0.01, 0.05, 0.1, 0.3]),
)
def test_replicating_the_data_never_gives_a_safer_choice(
    n: int, rates: list[float], k: int, method: PValueMethod, delta: float
) -> None:
    # k copies of the same sample: same empirical curve, k times the evidence.
    losses = [round(r * n) for r in rates]
    once = learn_then_test(_curve(losses, n), 0.05, delta, method)
    more = learn_then_test(_curve([k * x for x in losses], k * n), 0.05, delta, method)
    none = len(rates)
    assert (none if more.index is None else more.index) <= (
        none if once.index is None else once.index
    )
