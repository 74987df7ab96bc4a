"""What the optimizer hands to the registry: plain values, no MLflow types (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas import PolicyBody

ParetoPoint = tuple[float, float, float]
"""``(threshold, tokens_saved, em_drop)`` for one candidate threshold."""


@dataclass(frozen=True, slots=True)
class Frontier:
    """The trade-off curve of one segment and the threshold chosen on it."""

    points: Sequence[ParetoPoint]
    """Candidate thresholds with their expected token saving and EM drop."""
    chosen: float | None = None
    """The threshold the policy uses for this segment (marked on the plot)."""


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """The optimizer's verdict on whether a human must look at the proposal."""

    auto_approve: bool
    """True when the proposal is within the spec's auto-approve bounds."""
    reason: str
    """Why (which bounds held, or which one did not)."""


@dataclass(frozen=True, slots=True)
class PolicyDraft:
    """One policy proposal, ready to be registered."""

    policy_name: str
    """The policy family (the control topic key)."""
    body: PolicyBody
    """The full policy."""
    review: ReviewDecision
    """Whether it may be promoted without a reviewer."""
    params: Mapping[str, object] = field(default_factory=dict)
    """Run parameters (spec values, data window, ...); values become strings."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Run metrics; names are sanitized for MLflow."""
    segment_metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per-segment metrics (tokens saved, EM-drop bound, counts), by segment key."""
    pareto: Mapping[str, Frontier] = field(default_factory=dict)
    """Trade-off curve per segment key, for the plot."""
    description: str = ""
    """Free text shown on the model version."""
