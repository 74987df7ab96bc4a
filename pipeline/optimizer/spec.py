"""The policy spec: the reviewed YAML that bounds what the optimizer may propose.

One file per policy family (``policies/earlystop.yaml``). It names the
segment hierarchy and the settings the optimizer does not choose (minimum
tokens, budgets), the EM-drop tolerance per load mode with overrides per
tenant or segment, the risk level and how it is split, the threshold grid
and step limit, and the rules of review, canary and rollback. Load it with
:func:`load_spec`; every error names the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.optimizer.errors import SpecError
from schemas import (
    GLOBAL_SEGMENT,
    Id,
    LoadMode,
    PolicyBody,
    TokenBudget,
    TokenCount,
    segment_ancestors,
)
from schemas._types import LaxTuple, SegmentPart
from schemas.policy import SegmentKey

Level = Literal["segment", "task", "global"]
"""``segment`` is ``tenant/task/length_bucket``; each falls back to the next."""
LEVELS: tuple[Level, ...] = ("segment", "task", "global")
Split = Literal["none", "segments", "segments_and_modes"]
PValue = Literal["binomial", "hoeffding_bentkus"]
Method = Literal["anytime", "ltt"]
Loss = Literal["signed", "one_sided"]
Unlabeled = Literal["skip", "disagreement"]

Epsilon = Annotated[float, Field(gt=0.0, le=0.5)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Margin = Annotated[float, Field(gt=0.0, lt=1.0)]
Tolerance = Epsilon | dict[LoadMode, Epsilon]
"""A bare number applies to every load mode; a mapping may name only some."""


class _Spec(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True
    )


class SegmentSettings(_Spec):
    """What a segment's policy carries besides thresholds."""

    min_tokens: TokenCount
    """No early stop before this many tokens."""
    token_budget: TokenBudget
    """Generation budget in tokens."""

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.min_tokens > self.token_budget:
            msg = "min_tokens exceeds token_budget"
            raise ValueError(msg)
        return self


class SegmentsSpec(_Spec):
    """The hierarchy (``tenant/task/length`` -> ``task`` -> ``global``) and per-key settings."""

    levels: Annotated[tuple[Level, ...], LaxTuple] = LEVELS
    """Levels the optimizer writes entries at, most specific first; ``global`` is required."""
    settings: dict[SegmentKey, SegmentSettings]
    """Settings by key, looked up most specific first; ``global`` is required."""

    @field_validator("levels")
    @classmethod
    def _ordered(cls, levels: tuple[Level, ...]) -> tuple[Level, ...]:
        order = [LEVELS.index(level) for level in levels]
        if not order or order != sorted(set(order)) or levels[-1] != "global":
            msg = "levels must be distinct, ordered segment, task, global, and end with global"
            raise ValueError(msg)
        return levels

    @field_validator("settings")
    @classmethod
    def _has_global(cls, settings: dict[str, SegmentSettings]) -> dict[str, SegmentSettings]:
        if GLOBAL_SEGMENT not in settings:
            msg = "settings must contain 'global'"
            raise ValueError(msg)
        return settings


class ModeSpec(_Spec):
    """One load mode."""

    epsilon: Epsilon
    """Tolerated EM drop in this mode, unless an override says otherwise."""


class LoadModesSpec(_Spec):
    """Tolerance per load mode: saving compute is worth more at peak, so it may be looser."""

    offpeak: ModeSpec
    normal: ModeSpec
    peak: ModeSpec

    @model_validator(mode="after")
    def _looser_at_peak(self) -> Self:
        if not self.offpeak.epsilon <= self.normal.epsilon <= self.peak.epsilon:
            msg = "epsilon must not decrease from offpeak to normal to peak"
            raise ValueError(msg)
        return self


class ToleranceSpec(_Spec):
    """Overrides of the load modes' epsilon: segment key first, then tenant, then task."""

    tenants: dict[SegmentPart, Tolerance] = {}
    segments: dict[SegmentKey, Tolerance] = {}


class RiskSpec(_Spec):
    """The guarantee: P(EM drop > epsilon) <= delta."""

    delta: Annotated[float, Field(gt=0.0, le=0.5)]
    """Risk level before the split."""
    split: Split = "segments"
    """Bonferroni over the tests of one load mode (``segments``), of all modes, or none."""
    p_value: PValue = "binomial"
    """Exact binomial (tightest for 0/1 losses) or Hoeffding-Bentkus (``ltt`` only)."""
    method: Method = "ltt"
    """``anytime``: betting e-processes that accumulate a population's samples over
    cycles, valid at every cycle at once (:mod:`pipeline.optimizer.certify`);
    ``ltt``: Learn-then-Test on each cycle's samples, valid for one look."""
    loss: Loss = "one_sided"
    """``signed``: the EM drop the operator measures (full EM minus served EM; an
    early answer that fixes a wrong full one counts in favour; with ``ltt``, paired
    Clopper-Pearson bounds of the loss and gain rates); ``one_sided``: the share of
    requests made worse, a stricter promise."""
    unlabeled: Unlabeled = "skip"
    """Exploration requests with no label when the controller reads them: ``skip``
    them (valid while whether a request gets a label does not depend on its
    outcome), or certify them through ``disagreement``: a checkpoint counts as wrong
    unless its trial answer equals the full answer after EM normalisation, and the
    full answer as right. Its loss bounds the EM loss (signed or one-sided) from
    above, whatever the gold answer, so no assumption about labeling is needed."""
    max_certificates: Annotated[int, Field(ge=1, le=100_000)] = 64
    """With ``anytime`` and a split: delta is shared by at most this many
    (population, epsilon) certificates, each at ``delta / max_certificates``."""

    @model_validator(mode="after")
    def _signed_ltt_is_exact(self) -> Self:
        if self.method == "ltt" and self.loss == "signed" and self.p_value != "binomial":
            msg = "method 'ltt' certifies the signed loss with exact (binomial) bounds only"
            raise ValueError(msg)
        return self


class GridSpec(_Spec):
    """Candidate thresholds ``start, start+step, ..., stop``, plus 1.0 (no early stop)."""

    start: Fraction = 0.5
    stop: Fraction = 0.99
    step: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01

    @model_validator(mode="after")
    def _span(self) -> Self:
        if self.start > self.stop:
            msg = "start exceeds stop"
            raise ValueError(msg)
        if (self.stop - self.start) / self.step > 1000:
            msg = "more than 1000 grid points"
            raise ValueError(msg)
        return self

    def values(self) -> tuple[float, ...]:
        """The grid, increasing, ending at 1.0; rounded so that 0.9 is exactly 0.9."""
        count = int((self.stop - self.start) / self.step + 1e-9) + 1
        points = {round(self.start + i * self.step, 6) for i in range(count)}
        return tuple(sorted(points | {1.0}))


class SchedulesSpec(_Spec):
    """One-step schedules certified beside the plain thresholds (method ``anytime`` only).

    One-look ``ltt`` ignores them. A schedule holds ``θ`` before ``from_tokens``
    tokens and ``θ - lower_by`` from then on. Per population and tolerance, the
    epoch's first ``selection_samples`` rows choose one shape among
    ``from_tokens`` x ``lower_by`` (the one that would save most within epsilon
    on them); the rows after them test that shape's chain of ``θ`` at ``share``
    of the certificate's delta, the plain thresholds at the rest. A key is
    served the schedule only where its certified candidate saves more than the
    certified plain threshold.
    """

    share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Share of each certificate's delta spent on the schedule chain; 0 turns schedules off."""
    selection_samples: Annotated[int, Field(ge=1)] = 300
    """Rows of each epoch that choose the shape (never fed to its certificate)."""
    from_tokens: Annotated[tuple[TokenCount, ...], LaxTuple] = (128, 192, 256)
    """Candidate steps, in tokens."""
    lower_by: Annotated[tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...], LaxTuple] = (
        0.1,
        0.2,
        0.3,
        0.4,
    )
    """Candidate drops of the threshold at the step."""

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        if self.share > 0 and (not self.from_tokens or not self.lower_by):
            msg = "schedules need at least one from_tokens and one lower_by"
            raise ValueError(msg)
        return self

    def shapes(self) -> tuple[tuple[int, float], ...]:
        """Every candidate shape ``(from_tokens, lower_by)``; none when off."""
        if self.share == 0:
            return ()
        steps, drops = sorted(set(self.from_tokens)), sorted(set(self.lower_by))
        return tuple((t, c) for t in steps for c in drops)


class AutoApproveSpec(_Spec):
    """A proposal inside all of these bounds is promoted without a reviewer."""

    max_step: Fraction
    """Largest move toward more early stopping, per segment and mode."""
    max_em_drop_bound: Fraction
    """Largest EM-drop upper bound at a threshold that moved toward more early stopping."""
    min_samples: Annotated[int, Field(ge=0)]
    """Fewest samples of the segment's own behind a move toward more early stopping."""
    pooled: bool = False
    """Whether a move certified on a parent's pooled samples may go live unreviewed.
    Off by default: the pooled promise is about the pooled population, and a small
    segment inside it can be well over its own epsilon."""


class CanarySpec(_Spec):
    """How a promoted candidate is tried before it serves everyone."""

    share: Fraction
    """Share of requests served by the candidate; 0 promotes straight to production."""
    min_samples: Annotated[int, Field(ge=1)]
    """Labeled canary requests needed before a promotion."""
    max_samples: Annotated[int, Field(ge=1)] | None = None
    """Roll back as inconclusive after this many labeled canary requests."""
    alpha: Annotated[float, Field(gt=0.0, le=0.5)] = 0.05
    """Error level of each decision (false rollback, false promotion)."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.max_samples is not None and self.max_samples < self.min_samples:
            msg = "max_samples is below min_samples"
            raise ValueError(msg)
        return self


class GuardrailsSpec(_Spec):
    """Worst tolerated difference of canary from production, per metric."""

    em_max_drop: Margin
    """EM of production minus EM of the canary."""
    tokens_max_increase: Margin
    """Tokens of the canary minus production, as a share of the token budget."""
    negative_feedback_max_increase: Margin
    """Negative-feedback rate of the canary minus production."""


class PolicySpec(_Spec):
    """A validated policy spec; build with :func:`load_spec` or :func:`parse_spec`."""

    name: Id
    """Policy family name: the registered model and the control-topic key."""
    segments: SegmentsSpec
    load_modes: LoadModesSpec
    tolerance: ToleranceSpec = ToleranceSpec()
    risk: RiskSpec
    min_samples: Annotated[int, Field(ge=1)]
    """A population with fewer exploration samples falls back to its parent."""
    max_step: Annotated[float, Field(gt=0.0, le=1.0)]
    """Largest move toward more early stopping per cycle; safer moves are never limited."""
    grid: GridSpec = GridSpec()
    schedules: SchedulesSpec = SchedulesSpec()
    exploration_share: Annotated[float, Field(ge=0.0, le=0.5)]
    """Share of requests that explore (run to the end, trajectory recorded) in every
    segment still short of certainty; the policy's share."""
    exploration_floor: Annotated[float | None, Field(ge=0.0, le=0.5)] = None
    """Share of a segment whose own certificate is done growing (the next threshold on
    its walk measures above epsilon): enough for its change detectors. None: every
    segment explores at ``exploration_share``."""
    exploration_ceiling: Annotated[float | None, Field(ge=0.0, le=0.5)] = None
    """Share of a key the proposal serves no early stop in any load mode (uncertified,
    or restarted after a change): its requests run to the end anyway, so exploring
    costs only the confidence probes. Must be within the nodes'
    ``max_exploration_share``. None: such keys explore at ``exploration_share``."""
    auto_approve: AutoApproveSpec
    canary: CanarySpec
    guardrails: GuardrailsSpec
    default_policy: PolicyBody
    """The safe default: never stops early. In YAML, a path relative to the spec."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.auto_approve.max_step > self.max_step:
            msg = "auto_approve.max_step exceeds max_step: it could never bind"
            raise ValueError(msg)
        if self.exploration_floor is not None and self.exploration_floor > self.exploration_share:
            msg = "exploration_floor exceeds exploration_share"
            raise ValueError(msg)
        ceiling = self.exploration_ceiling
        if ceiling is not None and ceiling < self.exploration_share:
            msg = "exploration_ceiling is below exploration_share"
            raise ValueError(msg)
        body = self.default_policy
        if body.candidate_segments is not None:
            msg = "default_policy must not carry a canary candidate"
            raise ValueError(msg)
        if any(t != 1.0 for p in body.segments.values() for t in p.thresholds.values()):
            msg = "default_policy must not stop early: every threshold must be 1.0"
            raise ValueError(msg)
        return self

    def thresholds(self) -> tuple[float, ...]:
        """The threshold grid, increasing, ending at 1.0."""
        return self.grid.values()

    def settings_for(self, key: str) -> SegmentSettings:
        """Settings of the most specific key that has them."""
        for candidate in segment_ancestors(key):
            if candidate in self.segments.settings:
                return self.segments.settings[candidate]
        return self.segments.settings[GLOBAL_SEGMENT]  # unreachable: "global" is required

    def epsilon(self, key: str, mode: LoadMode) -> float:
        """Tolerance of ``key`` in ``mode``: segment key, then tenant, then task, then the mode."""
        parts = key.split("/")
        chain: list[Tolerance | None] = [self.tolerance.segments.get(key)]
        if len(parts) == 3:
            chain += [self.tolerance.tenants.get(parts[0]), self.tolerance.segments.get(parts[1])]
        for found in chain:
            if isinstance(found, float):
                return found
            if isinstance(found, dict) and mode in found:
                return found[mode]
        mode_spec: ModeSpec = getattr(self.load_modes, mode)
        return mode_spec.epsilon


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_spec(data: Mapping[str, Any], *, source: str = "<spec>") -> PolicySpec:
    """Validate an already-parsed spec.

    Raises:
        SpecError: naming the source and every invalid field.
    """
    try:
        return PolicySpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        msg = f"invalid policy spec {source}: {problems}"
        raise SpecError(msg) from None


def load_spec(path: str | Path) -> PolicySpec:
    """Read and validate a YAML spec; ``default_policy`` may be a path relative to it.

    Raises:
        SpecError: if a file is missing or unreadable, or a field is invalid.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        msg = f"cannot read policy spec {path}: {exc}"
        raise SpecError(msg) from None
    if not isinstance(data, dict):
        msg = f"invalid policy spec {path}: the top level must be a mapping"
        raise SpecError(msg)
    reference = data.get("default_policy")
    if isinstance(reference, str):
        target = path.parent / reference
        try:
            data["default_policy"] = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"invalid policy spec {path}: default_policy: cannot read {target}: {exc}"
            raise SpecError(msg) from None
    return parse_spec(data, source=str(path))
