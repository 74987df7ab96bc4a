"""The review page's content, from the optimizer's full record of a proposal (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.optimizer.pareto import ParetoPoint
from pipeline.optimizer.proposal import Proposal, SegmentDecision
from pipeline.registry.draft import KeyFacts, ModeFacts, ReviewFacts

_TOLERANCE = 1e-9


def saving_at(points: Sequence[ParetoPoint], threshold: float) -> float | None:
    """Token saving at ``threshold`` on a population's Pareto data (None: not on its grid)."""
    for point in points:
        if abs(point.threshold - threshold) <= _TOLERANCE:
            return point.token_saving
    return None


def _mode(proposal: Proposal, d: SegmentDecision) -> ModeFacts:
    points = proposal.pareto.get(d.population, ()) if d.population is not None else ()
    return ModeFacts(
        mode=d.mode,
        production=d.current,
        proposed=d.threshold,
        chosen=d.proposed,
        step_limited=d.step_limited,
        samples=d.samples,
        population=d.population,
        population_samples=d.population_samples,
        guarantee=d.guarantee,
        epsilon=d.epsilon,
        em_drop_bound=d.em_drop_bound,
        saving=d.token_saving,
        # Pareto points are plain thresholds: a schedule in production is not measured there.
        production_saving=None if d.current_schedule else saving_at(points, d.current),
        schedule=d.schedule,
        production_schedule=d.current_schedule,
    )


def certification(proposal: Proposal) -> str:
    """How the proposal's thresholds were certified, in one line."""
    tests = ", ".join(f"{mode} {n}" for mode, n in proposal.tests.items())
    return (
        f"method {proposal.method}, {proposal.loss} loss, p-value {proposal.p_value}; "
        f"delta {proposal.delta} split by {proposal.split}; tests per load mode: {tests}"
    )


def review_facts(
    proposal: Proposal,
    *,
    flags: Sequence[str] = (),
    plot_mode: str = "normal",
) -> ReviewFacts:
    """What the review page shows about ``proposal``.

    Args:
        proposal: The optimizer's record.
        flags: Events a reviewer must know about (drift alarms, restarts).
        plot_mode: The load mode starred on the Pareto plot.
    """
    by_key: dict[str, list[SegmentDecision]] = {}
    for d in proposal.decisions:
        by_key.setdefault(d.key, []).append(d)
    keys = []
    for key, decisions in by_key.items():
        policy = proposal.body.segments.get(key)
        keys.append(
            KeyFacts(
                key=key,
                modes=tuple(_mode(proposal, d) for d in decisions),
                exploration_share=policy.exploration_share if policy is not None else None,
            )
        )
    return ReviewFacts(
        keys=tuple(keys),
        exploration_share=proposal.body.exploration_share,
        dropped=proposal.dropped,
        flags=tuple(flags),
        certification=certification(proposal),
        plot_mode=plot_mode,
    )
