"""Tokens saved against EM drop, per threshold: the data of a proposal's Pareto plot.

Plain numbers only; the registry draws the picture (matplotlib stays out of
the pure core).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.optimizer.curve import Curve


class ParetoPoint(BaseModel):
    """What one threshold does to a population."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    threshold: float
    token_saving: float
    """Share of the full generations' tokens saved."""
    budget_saving: float
    """Tokens saved as a share of the token budget."""
    em_drop: float
    """Empirical loss: full answer right, early answer wrong."""
    em_gain: float
    """Empirical share with the full answer wrong and the early answer right."""
    losses: int
    n: int


def pareto_points(curve: Curve) -> tuple[ParetoPoint, ...]:
    """One point per grid threshold, in increasing threshold order."""
    n = max(curve.n, 1)
    saving, budget, drop = curve.token_saving(), curve.budget_saving(), curve.em_drop()
    return tuple(
        ParetoPoint(
            threshold=theta,
            token_saving=float(saving[j]),
            budget_saving=float(budget[j]),
            em_drop=float(drop[j]),
            em_gain=int(curve.gains[j]) / n,
            losses=int(curve.losses[j]),
            n=curve.n,
        )
        for j, theta in enumerate(curve.grid)
    )


def pareto_front(points: tuple[ParetoPoint, ...]) -> tuple[ParetoPoint, ...]:
    """The points no other point beats on both savings and EM drop, by rising saving."""
    ranked = sorted(points, key=lambda p: (p.token_saving, -p.em_drop))
    front: list[ParetoPoint] = []
    for point in reversed(ranked):
        # Walking from the largest saving down, keep a point only if it drops strictly less EM.
        if not front or point.em_drop < front[-1].em_drop:
            front.append(point)
    return tuple(reversed(front))
