"""Always-valid guardrail tests for a canary against production.

Observations are paired: the i-th labeled canary request with a production
request from the same time, chosen without looking at either outcome (the
reader's job). A pair gives one difference ``d`` in [-1, 1] oriented so that
positive means harm: production EM minus canary EM, or canary minus
production for tokens (as a share of the budget) and negative feedback.
Pairs are i.i.d. while traffic is, whatever the arms' sizes.

Each metric runs two betting tests (Waudby-Smith and Ramdas, 2023) with
predictable aGRAPA bets:

- *harm*: H0 E[d] <= margin. Wealth ``prod(1 + l_i (d_i - margin))`` is a
  nonnegative supermartingale under H0, so by Ville's inequality it ever
  reaches ``1/alpha`` with probability at most alpha, however often it is
  looked at. Crossing means roll back.
- *safety*: H0 E[d] >= margin, wealth ``prod(1 + l_i (margin - d_i))``.
  Crossing is evidence the canary is within the margin.

A canary is rolled back as soon as any metric's harm test crosses (alpha is
split over metrics, so a false rollback has probability <= alpha), and
promoted once every metric's safety test has crossed and enough samples are
in (an intersection-union test: a false promotion has probability <= alpha
with no split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Action = Literal["promote", "rollback", "continue"]

BET_CAP = 0.5
"""Bets stay below half of the largest that keeps wealth positive (no ruin on one pair)."""
PRIOR = 1.0
"""Pseudo-count in the bet's variance estimate, so the first bets are small."""


def paired_differences(
    canary: Sequence[float] | FloatArray,
    production: Sequence[float] | FloatArray,
    *,
    harm: Literal["decrease", "increase"],
) -> FloatArray:
    """Differences of the first ``min(len)`` pairs, positive when the canary is worse.

    Args:
        canary: Canary values in [0, 1] (EM as 0/1, tokens/budget, negative feedback as 0/1).
        production: Production values in [0, 1], paired by position.
        harm: ``"decrease"`` when a lower canary value is worse (EM), else ``"increase"``.
    """
    n = min(len(canary), len(production))
    c = np.asarray(canary, dtype=np.float64)[:n]
    p = np.asarray(production, dtype=np.float64)[:n]
    d: FloatArray = p - c if harm == "decrease" else c - p
    return d


def log_wealth(x: FloatArray, lower: float) -> FloatArray:
    """Log wealth after each step of a bet against H0: E[x] <= 0, along the last axis.

    Args:
        x: Observations, each at least ``lower``; any leading axes are independent runs.
        lower: A negative lower bound of ``x``.

    The bet before step t uses only steps before it (predictable): aGRAPA,
    ``mean / mean of squares`` of the past, clipped to ``[0, BET_CAP / -lower]``.
    """
    sums = np.cumsum(x, axis=-1) - x
    squares = np.cumsum(x * x, axis=-1) - x * x
    bets = np.clip(sums / (squares + PRIOR), 0.0, BET_CAP / -lower)
    wealth: FloatArray = np.cumsum(np.log1p(bets * x), axis=-1)
    return wealth


def first_crossing(log_w: FloatArray, level: float) -> int | None:
    """Index of the first step whose log wealth reaches ``log(level)``; None if none does."""
    hits = np.flatnonzero(log_w >= math.log(level))
    return int(hits[0]) if hits.size else None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where one metric's two tests stand.

    Attributes:
        metric: Name of the metric.
        pairs: Pairs observed.
        mean_difference: Mean of ``d`` (positive: canary worse).
        margin: Tolerated mean difference.
        harm_e: Current e-value (wealth) against "within the margin".
        harm_at: Pair index at which harm was established; None if not (yet).
        safe_e: Current e-value against "beyond the margin".
        safe_at: Pair index at which safety was established; None if not (yet).
    """

    metric: str
    pairs: int
    mean_difference: float
    margin: float
    harm_e: float
    harm_at: int | None
    safe_e: float
    safe_at: int | None


def metric_evidence(
    metric: str, differences: FloatArray, margin: float, harm_level: float, safe_level: float
) -> Evidence:
    """Run both tests on one metric's pair differences.

    Args:
        metric: Name for the record.
        differences: ``d`` per pair, in [-1, 1], positive when the canary is worse.
        margin: Tolerated mean difference, in (0, 1).
        harm_level: Wealth that establishes harm (``1/alpha`` before any split).
        safe_level: Wealth that establishes safety.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return Evidence(metric, 0, 0.0, margin, 1.0, None, 1.0, None)
    harm = log_wealth(d - margin, -1.0 - margin)
    safe = log_wealth(margin - d, margin - 1.0)
    return Evidence(
        metric=metric,
        pairs=int(d.size),
        mean_difference=float(d.mean()),
        margin=margin,
        harm_e=math.exp(min(float(harm[-1]), 700.0)),
        harm_at=first_crossing(harm, harm_level),
        safe_e=math.exp(min(float(safe[-1]), 700.0)),
        safe_at=first_crossing(safe, safe_level),
    )


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """What to do with the canary now, and the evidence for it."""

    action: Action
    reason: str
    evidence: tuple[Evidence, ...]


def canary_verdict(
    differences: Mapping[str, FloatArray],
    margins: Mapping[str, float],
    *,
    alpha: float,
    min_samples: int,
    max_samples: int | None = None,
    primary: str = "em",
) -> CanaryVerdict:
    """Promote, roll back or keep watching a canary.

    Args:
        differences: Pair differences per metric (see :func:`paired_differences`).
        margins: Tolerated mean difference per metric (same keys).
        alpha: Probability bound of a false rollback, and of a false promotion.
        min_samples: Pairs of the ``primary`` metric needed before a promotion.
        max_samples: Pairs of ``primary`` after which an undecided canary is rolled back.
        primary: The metric whose pair count gates promotion (labeled EM).

    Raises:
        KeyError: if a metric has no margin, or ``primary`` no differences.
    """
    names = sorted(differences)
    harm_level = len(names) / alpha
    evidence = tuple(
        metric_evidence(name, differences[name], margins[name], harm_level, 1.0 / alpha)
        for name in names
    )
    harmed = [e for e in evidence if e.harm_at is not None]
    if harmed:
        detail = ", ".join(
            f"{e.metric} difference {e.mean_difference:+.4f} beyond {e.margin} (e={e.harm_e:.3g})"
            for e in harmed
        )
        return CanaryVerdict("rollback", f"guardrail breached: {detail}", evidence)
    pairs = len(differences[primary])
    if pairs >= min_samples and all(e.safe_at is not None for e in evidence):
        return CanaryVerdict(
            "promote", f"every guardrail within its margin after {pairs} pairs", evidence
        )
    if max_samples is not None and pairs >= max_samples:
        return CanaryVerdict("rollback", f"inconclusive after {pairs} pairs", evidence)
    return CanaryVerdict("continue", f"{pairs} pairs, no decision yet", evidence)
