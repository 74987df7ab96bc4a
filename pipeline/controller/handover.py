"""The proposal as the registry takes it: params, flat metrics, Pareto frontiers, review.

Bridges :class:`pipeline.optimizer.Proposal` (the full record) to
:class:`pipeline.registry.draft.Proposal` (plain values MLflow stores).
Both sides are pure; importing this loads no MLflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pipeline.controller.review_facts import review_facts
from pipeline.optimizer.proposal import Proposal
from pipeline.optimizer.review import review_reasons
from pipeline.optimizer.spec import PolicySpec
from pipeline.registry import draft as registry

PLOT_MODE = "normal"
"""The load mode whose chosen thresholds are starred on the Pareto plot."""


def spec_digest(spec: PolicySpec) -> str:
    """SHA-256 of the spec's canonical JSON: which reviewed spec a version came from."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def _params(proposal: Proposal, spec: PolicySpec) -> dict[str, object]:
    params: dict[str, object] = {
        "spec_sha256": spec_digest(spec),
        "delta": proposal.delta,
        "split": proposal.split,
        "p_value": proposal.p_value,
        "min_samples": spec.min_samples,
        "max_step": spec.max_step,
        "grid": f"{spec.grid.start}..{spec.grid.stop} step {spec.grid.step} + 1.0",
        "exploration_share": spec.exploration_share,
        "canary_share": spec.canary.share,
    }
    for mode, tests in proposal.tests.items():
        params[f"epsilon_{mode}"] = getattr(spec.load_modes, mode).epsilon
        params[f"tests_{mode}"] = tests
    return params


def _segment_metrics(proposal: Proposal) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for d in proposal.decisions:
        row = table.setdefault(
            d.key,
            {
                "samples": float(d.samples),
                "population_samples": float(d.population_samples),
                "fell_back": float(d.fell_back),
            },
        )
        row[f"{d.mode}_threshold"] = d.threshold
        row[f"{d.mode}_certified"] = float(d.certified)
        row[f"{d.mode}_token_saving"] = d.token_saving
        row[f"{d.mode}_budget_saving"] = d.budget_saving
        row[f"{d.mode}_em_drop"] = d.em_drop
        row[f"{d.mode}_em_drop_bound"] = d.em_drop_bound
        row[f"{d.mode}_losses"] = float(d.losses)
        if d.schedule is not None:
            row[f"{d.mode}_schedule_from_tokens"] = float(d.schedule[0])
            row[f"{d.mode}_schedule_threshold"] = d.schedule[1]
        if d.oracle_threshold is not None:
            row[f"{d.mode}_oracle_threshold"] = d.oracle_threshold
            row[f"{d.mode}_oracle_saving"] = d.oracle_saving
    return table


def _metrics(proposal: Proposal) -> dict[str, float]:
    metrics: dict[str, float] = {"keys": float(len(proposal.body.segments))}
    for mode in proposal.tests:
        rows = [d for d in proposal.decisions if d.mode == mode]
        metrics[f"{mode}_certified_share"] = sum(d.certified for d in rows) / len(rows)
        metrics[f"{mode}_fallback_share"] = sum(d.fell_back for d in rows) / len(rows)
        metrics[f"{mode}_max_em_drop_bound"] = max(
            (d.em_drop_bound for d in rows if d.certified), default=0.0
        )
    overall = [d for d in proposal.decisions if d.key == "global"]
    for d in overall:
        metrics[f"{d.mode}_global_token_saving"] = d.token_saving
    return metrics


def _frontiers(proposal: Proposal) -> dict[str, registry.Frontier]:
    chosen = {
        d.key: d.threshold
        for d in proposal.decisions
        if d.mode == PLOT_MODE and d.population == d.key
    }
    return {
        key: registry.Frontier(
            points=tuple((p.threshold, p.token_saving, p.em_drop) for p in points),
            chosen=chosen.get(key),
        )
        for key, points in proposal.pareto.items()
    }


def to_registry(
    proposal: Proposal, spec: PolicySpec, *, flags: Sequence[str] = ()
) -> registry.PolicyDraft:
    """The registry's view of ``proposal``, with the spec's auto-approve verdict.

    The draft carries the review page's facts (``flags``: drift alarms or
    restarted certificates a reviewer must know about); the registry writes the
    version's description from them, so ``description`` is left empty.
    """
    reasons = review_reasons(proposal, spec)
    review = registry.ReviewDecision(
        auto_approve=not reasons,
        reason="; ".join(reasons) if reasons else "every move within the auto-approve bounds",
    )
    return registry.PolicyDraft(
        policy_name=proposal.policy_name,
        body=proposal.body,
        review=review,
        params=_params(proposal, spec),
        metrics=_metrics(proposal),
        segment_metrics=_segment_metrics(proposal),
        pareto=_frontiers(proposal),
        facts=review_facts(proposal, flags=flags, plot_mode=PLOT_MODE),
    )
