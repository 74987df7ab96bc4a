"""What one optimizer cycle proposes, with the evidence a reviewer and the registry need."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.optimizer.pareto import ParetoPoint
from pipeline.optimizer.spec import Loss, Method, PValue, Split
from schemas import LoadMode, PolicyBody

Guarantee = Literal["segment", "pooled", "none"]
"""``segment``: certified on the segment's own samples; ``pooled``: on a parent's
pooled samples, so it holds for that population, not the segment alone;
``none``: nothing certified, the safe default threshold is used."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class SegmentDecision(_Record):
    """The threshold of one policy key in one load mode, and why.

    Rates and bounds are measured on ``population``'s samples at the final
    ``threshold``; ``samples`` counts the key's own samples.
    """

    key: str
    mode: LoadMode
    population: str | None
    """Key whose (pooled) samples were tested; None when no population had enough."""
    fell_back: bool
    """True when ``population`` is a parent of ``key`` (or None)."""
    guarantee: Guarantee
    epsilon: float
    delta: float
    """Level of this test after the split."""
    samples: int
    population_samples: int
    losses: int
    """Losses at ``threshold`` on the population."""
    certified: bool
    """Whether ``threshold`` was rejected by the test: P(EM drop > epsilon) <= delta holds."""
    proposed: float
    """The test's choice, before the step limit."""
    threshold: float
    """The final threshold, on the grid."""
    current: float
    """The threshold in force before this proposal."""
    step_limited: bool
    token_saving: float
    """Share of full-generation tokens saved (empirical)."""
    budget_saving: float
    """Tokens saved as a share of the budget (empirical)."""
    em_drop: float
    """Empirical loss rate."""
    em_drop_bound: float
    """(1 - delta) Clopper-Pearson upper bound on the loss rate."""
    full_em: float
    """EM of the full generations of the population."""
    p_values: tuple[tuple[float, float], ...]
    """``(threshold, p-value)`` of the tested sequence, safest first."""
    oracle_threshold: float | None
    """The walk's reach on point estimates of the same samples (no test)."""
    oracle_saving: float
    """Token saving at the oracle threshold (0 when None)."""
    schedule: tuple[int, float] | None = None
    """``(from_tokens, threshold)`` when the key is served a one-step schedule in this
    mode: ``threshold`` (the field above) before ``from_tokens`` tokens, this one
    from then on, certified by the population's schedule chain; rates, bounds and
    savings are then the schedule's. None: the plain threshold."""
    current_schedule: tuple[int, float] | None = None
    """The first step of the schedule in force for this key and mode (beside ``current``)."""


class Proposal(_Record):
    """A proposed policy version: the body to publish plus every decision behind it."""

    policy_name: str
    body: PolicyBody
    delta: float
    split: Split
    p_value: PValue
    method: Method = "ltt"
    """How thresholds were certified: anytime certificates, or one look (LTT)."""
    loss: Loss = "one_sided"
    """The loss whose mean is promised to stay within epsilon."""
    tests: dict[LoadMode, int]
    """Tests run per load mode (the Bonferroni denominators)."""
    decisions: tuple[SegmentDecision, ...]
    dropped: tuple[str, ...]
    """Keys of the current policy that this body no longer holds (reviewer's attention)."""
    pareto: dict[str, tuple[ParetoPoint, ...]]
    """Pareto data of every tested population, by key."""

    def decision(self, key: str, mode: LoadMode) -> SegmentDecision:
        """The decision for ``key`` in ``mode``.

        Raises:
            KeyError: if the proposal has none.
        """
        for found in self.decisions:
            if found.key == key and found.mode == mode:
                return found
        raise KeyError((key, mode))
