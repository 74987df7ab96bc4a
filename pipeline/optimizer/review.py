"""The spec's review rules applied to a proposal and to a canary's live evidence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.optimizer.proposal import Proposal
from pipeline.optimizer.sequential import (
    CanaryVerdict,
    FloatArray,
    canary_verdict,
    paired_differences,
)
from pipeline.optimizer.spec import PolicySpec

_TOLERANCE = 1e-9

Pairs = tuple[Sequence[float] | FloatArray, Sequence[float] | FloatArray]
"""``(canary values, production values)``, paired by position."""


def review_reasons(proposal: Proposal, spec: PolicySpec) -> tuple[str, ...]:
    """Why ``proposal`` needs a human reviewer; empty when it may be promoted by itself.

    Only moves toward more early stopping are checked: a safer or unchanged
    threshold never needs review, since it cannot raise the EM drop beyond
    what is already deployed and certified.
    """
    bounds = spec.auto_approve
    reasons: list[str] = []
    if proposal.dropped:
        reasons.append(f"drops keys of the current policy: {', '.join(proposal.dropped)}")
    for d in proposal.decisions:
        step = d.current - d.threshold
        if step <= _TOLERANCE:
            continue
        where = f"{d.key} ({d.mode})"
        if not d.certified:
            reasons.append(f"{where}: uncertified move toward early stopping")
        if step > bounds.max_step + _TOLERANCE:
            reasons.append(f"{where}: step {step:.2f} exceeds {bounds.max_step}")
        if d.em_drop_bound > bounds.max_em_drop_bound:
            reasons.append(
                f"{where}: EM-drop bound {d.em_drop_bound:.4f} exceeds {bounds.max_em_drop_bound}"
            )
        if d.guarantee == "pooled" and not bounds.pooled:
            reasons.append(f"{where}: certified on the pooled samples of {d.population} only")
        own = d.population_samples if d.guarantee == "pooled" and bounds.pooled else d.samples
        if own < bounds.min_samples:
            reasons.append(f"{where}: {own} samples, {bounds.min_samples} needed")
    return tuple(reasons)


def guardrail_verdict(
    spec: PolicySpec,
    *,
    em: Pairs,
    tokens: Pairs | None = None,
    negative_feedback: Pairs | None = None,
) -> CanaryVerdict:
    """Apply the spec's guardrails and canary rules to paired canary/production values.

    Args:
        spec: The policy spec.
        em: Exact match (0/1) of labeled canary and production requests.
        tokens: Tokens generated as a share of the budget, if watched.
        negative_feedback: Whether a request got negative feedback (0/1), if watched.
    """
    rails = spec.guardrails
    differences = {"em": paired_differences(*em, harm="decrease")}
    margins = {"em": rails.em_max_drop}
    if tokens is not None:
        differences["tokens"] = paired_differences(*tokens, harm="increase")
        margins["tokens"] = rails.tokens_max_increase
    if negative_feedback is not None:
        differences["negative_feedback"] = paired_differences(*negative_feedback, harm="increase")
        margins["negative_feedback"] = rails.negative_feedback_max_increase
    for name, d in differences.items():
        if d.size and not np.all(np.abs(d) <= 1.0):
            msg = f"guardrail {name}: values must lie in [0, 1]"
            raise ValueError(msg)
    return canary_verdict(
        differences,
        margins,
        alpha=spec.canary.alpha,
        min_samples=spec.canary.min_samples,
        max_samples=spec.canary.max_samples,
    )
