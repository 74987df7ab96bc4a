"""Learn-then-Test: the most aggressive threshold whose risk is certified.

For each grid threshold θ the null hypothesis is H0(θ): E[loss(θ)] > ε. A
valid p-value for it comes from the loss count (exact binomial, or
Hoeffding-Bentkus). Fixed-sequence testing walks the grid from the safest
threshold (1.0) toward the most aggressive, rejecting while p <= δ, and stops
at the first threshold it cannot reject. This controls the family-wise error
at δ without any correction for the number of thresholds: a true null can be
rejected only if the first true null in the order is, which happens with
probability at most δ. So with probability at least 1 - δ *every* rejected
threshold has risk <= ε, which is what lets the step limit pick any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats  # type: ignore[import-untyped]  # no stubs in the dev extra yet

from pipeline.optimizer.curve import Curve, FloatArray, IntArray

PValueMethod = Literal["binomial", "hoeffding_bentkus"]


def binomial_p_value(losses: IntArray, n: int, epsilon: float) -> FloatArray:
    """P(Binomial(n, ε) <= losses): exact p-values for "risk > ε" (1 where n is 0).

    Valid because the binomial CDF at ``losses`` falls as the true risk rises,
    so under any risk >= ε it is at most its value at ε.
    """
    if n == 0:
        return np.ones(losses.shape, dtype=np.float64)
    p: FloatArray = stats.binom.cdf(losses, n, epsilon)
    return p


def _bernoulli_kl(a: FloatArray, b: float) -> FloatArray:
    # KL(Bern(a) || Bern(b)) with 0 log 0 = 0; only called with a <= b < 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(a > 0, a * np.log(a / b), 0.0)
        right = np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - b)), 0.0)
    kl: FloatArray = left + right
    return kl


def hoeffding_bentkus_p_value(losses: IntArray, n: int, epsilon: float) -> FloatArray:
    """Hoeffding-Bentkus p-values for "risk > ε" (Bates et al., 2021), valid for losses in [0, 1].

    Looser than :func:`binomial_p_value` for 0/1 losses; offered because it
    stays valid if the loss ever becomes fractional (e.g. partial credit).
    """
    if n == 0:
        return np.ones(losses.shape, dtype=np.float64)
    risk = losses / n
    hoeffding = np.exp(-n * _bernoulli_kl(np.minimum(risk, epsilon), epsilon))
    # The count itself: ceil(n * (losses / n)) is one too many when the division rounds up.
    bentkus = math.e * stats.binom.cdf(losses, n, epsilon)
    p: FloatArray = np.minimum(np.minimum(hoeffding, bentkus), 1.0)
    return p


SIGNED_LOSS_SHARE = 0.8
"""Of a signed test's level, the share spent on the losses' upper bound (the rest on the
gains' lower bound): fixed in advance, because gains are usually the rarer of the two."""


def _cp_upper(count: FloatArray, n: int, alpha: float | FloatArray) -> FloatArray:
    upper: FloatArray = np.where(
        count >= n, 1.0, stats.beta.ppf(1.0 - alpha, count + 1, np.maximum(n - count, 1))
    )
    return upper


def _cp_lower(count: FloatArray, n: int, alpha: float | FloatArray) -> FloatArray:
    lower: FloatArray = np.where(
        count <= 0, 0.0, stats.beta.ppf(alpha, np.maximum(count, 1), n - count + 1)
    )
    return lower


def signed_upper(
    losses: IntArray, gains: IntArray, n: int, alpha: float | FloatArray
) -> FloatArray:
    """A (1 - alpha) upper bound on ``p_loss - p_gain``, the mean signed EM drop.

    Clopper-Pearson's upper bound of the loss rate at ``SIGNED_LOSS_SHARE *
    alpha`` minus its lower bound of the gain rate at the rest: both hold
    together with probability at least 1 - alpha (a union bound), and then so
    does the difference. Exact for 0/1 outcomes and one look; 1.0 without samples.
    """
    if n == 0:
        return np.ones(np.shape(losses), dtype=np.float64)
    lo = np.asarray(losses, dtype=np.float64)
    ga = np.asarray(gains, dtype=np.float64)
    bound: FloatArray = _cp_upper(lo, n, SIGNED_LOSS_SHARE * alpha) - _cp_lower(
        ga, n, (1.0 - SIGNED_LOSS_SHARE) * alpha
    )
    return bound


def signed_p_value(losses: IntArray, gains: IntArray, n: int, epsilon: float) -> FloatArray:
    """P-values of "mean signed EM drop > ε": the least alpha whose :func:`signed_upper` <= ε.

    Valid: under the null, the bound falls to ε or below only when one of its
    two Clopper-Pearson bounds fails, which has probability at most alpha. The
    bound shrinks as alpha grows, so the least alpha is found by bisection.
    """
    shape = np.shape(losses)
    if n == 0:
        return np.ones(shape, dtype=np.float64)
    low = np.zeros(shape, dtype=np.float64)
    high = np.ones(shape, dtype=np.float64)
    for _ in range(40):  # alpha to within 1e-12
        mid = (low + high) / 2
        ok = signed_upper(losses, gains, n, mid) <= epsilon
        high = np.where(ok, mid, high)
        low = np.where(ok, low, mid)
    never = signed_upper(losses, gains, n, 1.0) > epsilon
    p: FloatArray = np.where(never, 1.0, high)
    return p


def p_values(
    curve: Curve, epsilon: float, method: PValueMethod = "binomial", *, signed: bool = False
) -> FloatArray:
    """P-values of H0(θ): risk > ε for every threshold of the curve's grid.

    ``signed``: the risk is the mean signed EM drop (:func:`signed_p_value`),
    else the one-sided loss rate.
    """
    if signed:
        return signed_p_value(curve.losses, curve.gains, curve.n, epsilon)
    if method == "binomial":
        return binomial_p_value(curve.losses, curve.n, epsilon)
    return hoeffding_bentkus_p_value(curve.losses, curve.n, epsilon)


def clopper_pearson_upper(losses: int, n: int, alpha: float) -> float:
    """One-sided (1 - α) Clopper-Pearson upper bound on a risk from ``losses`` of ``n``.

    Dual to :func:`binomial_p_value`: the bound is <= ε exactly when the
    binomial test rejects "risk > ε" at level α.
    """
    if n == 0 or losses >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, losses + 1, n - losses))


def min_certifiable_samples(epsilon: float, delta: float) -> int:
    """Fewest samples with which zero losses certify risk <= ε at level δ (binomial test)."""
    return math.ceil(math.log(delta) / math.log1p(-epsilon))


@dataclass(frozen=True, slots=True)
class LttResult:
    """The outcome of one fixed-sequence test.

    Attributes:
        index: Grid index of the most aggressive rejected threshold; None when
            even the safest was not rejected (nothing certified).
        tested: Thresholds tested, safest first, ending with the first one not
            rejected (when there was one).
        p_values: P-value of each tested threshold.
        delta: The level the test ran at.
    """

    index: int | None
    tested: tuple[float, ...]
    p_values: tuple[float, ...]
    delta: float

    def certified(self, index: int) -> bool:
        """Whether grid ``index`` is among the rejected (certified) thresholds."""
        return self.index is not None and index >= self.index


def learn_then_test(
    curve: Curve,
    epsilon: float,
    delta: float,
    method: PValueMethod = "binomial",
    *,
    signed: bool = False,
) -> LttResult:
    """Fixed-sequence test over the curve's grid, from 1.0 toward its lowest threshold.

    Args:
        curve: Loss counts per threshold on the population.
        epsilon: Tolerated risk (EM drop).
        delta: Level of this test (already split across tests by the caller).
        method: P-value family (of the one-sided loss).
        signed: Certify the mean signed EM drop instead (:func:`signed_p_value`).
    """
    pvals = p_values(curve, epsilon, method, signed=signed)
    index: int | None = None
    tested: list[float] = []
    shown: list[float] = []
    for j in range(len(curve.grid) - 1, -1, -1):
        if curve.grid[j] >= 1.0:
            continue  # off: never stops early, so its risk is 0 by construction, untested
        tested.append(curve.grid[j])
        shown.append(float(pvals[j]))
        if pvals[j] > delta:
            break
        index = j
    return LttResult(index=index, tested=tuple(tested), p_values=tuple(shown), delta=delta)


def empirical_oracle(curve: Curve, epsilon: float, *, signed: bool = False) -> int | None:
    """Grid index the same walk reaches on the point estimates: loss <= ε, no test.

    Walks from the safest threshold down while the empirical loss stays within
    ε (as :func:`pipeline.sim.oracle_threshold` does on the true curve), so it
    is the best the optimizer could do with infinitely many samples of this
    population. None when even the safest threshold exceeds ε or there is no data.
    """
    if curve.n == 0:
        return None
    drop = curve.signed_drop() if signed else curve.em_drop()
    index: int | None = None
    for j in range(len(curve.grid) - 1, -1, -1):
        if drop[j] > epsilon:
            break
        index = j
    return index


def hoeffding_upper(mean: float, n: int, alpha: float, width: float = 1.0) -> float:
    """One-look (1 - alpha) upper bound on a mean of values in a range of ``width``.

    For the signed loss (values in [-1, 1], width 2) shown to reviewers beside
    the promise; 1.0 where there are no samples.
    """
    if n == 0:
        return 1.0
    return min(1.0, mean + width * math.sqrt(math.log(1.0 / alpha) / (2.0 * n)))
