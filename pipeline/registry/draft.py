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
class ModeFacts:
    """One policy key in one load mode, as the review page shows it."""

    mode: str
    production: float
    """The threshold in force for the key's requests now (1.0: no early stop)."""
    proposed: float
    """The threshold this proposal gives it."""
    chosen: float
    """The test's choice; differs from ``proposed`` when the step limit held it back."""
    step_limited: bool
    samples: int
    """The key's own samples."""
    population: str | None
    """Key whose samples were tested (the key itself, a parent, or None: none had enough)."""
    population_samples: int
    guarantee: str
    """``segment``, ``pooled`` or ``none``."""
    epsilon: float
    em_drop_bound: float
    saving: float
    """Expected share of tokens saved at ``proposed`` (on the population's samples)."""
    production_saving: float | None
    """The same at ``production``; None when it was not measured (off the grid, no data)."""
    schedule: tuple[int, float] | None = None
    """``(from_tokens, threshold)`` when ``proposed`` gives way to a lower threshold there."""
    production_schedule: tuple[int, float] | None = None
    """The same for ``production``."""


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """One policy key: its rows per load mode and its own exploration share."""

    key: str
    modes: Sequence[ModeFacts]
    exploration_share: float | None = None
    """The key's own share; None: the policy's."""


@dataclass(frozen=True, slots=True)
class ReviewFacts:
    """What the review page of a proposal shows, besides the review decision."""

    keys: Sequence[KeyFacts]
    exploration_share: float
    """The policy's exploration share."""
    dropped: Sequence[str] = ()
    """Keys of the production policy that the proposal no longer holds."""
    flags: Sequence[str] = ()
    """Events a reviewer must know about (drift alarms, restarted certificates)."""
    certification: str = ""
    """How the thresholds were certified, in one line."""
    plot_mode: str = "normal"
    """The load mode whose thresholds are starred on the Pareto plot."""


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
    """Free text shown on the model version (after the review page's verdict, if any)."""
    facts: ReviewFacts | None = None
    """The review page's content; with it, the run logs the page (``review/``)."""
