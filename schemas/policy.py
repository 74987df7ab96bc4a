"""The early-stopping policy: thresholds per segment and load mode."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Self

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from schemas._base import Part
from schemas._types import (
    Confidence,
    LaxTuple,
    LoadMode,
    PolicyVersion,
    Share,
    TokenBudget,
    TokenCount,
)
from schemas.inference import GLOBAL_SEGMENT, Segment

MAX_SCHEDULE_STEPS = 64
MAX_SEGMENTS = 10_000

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
SegmentKey = Annotated[
    str,
    StringConstraints(pattern=rf"^(global|{_PART}|{_PART}/{_PART}/(short|medium|long))$"),
]
"""``"global"``, a task (``"qa"``) or ``"tenant/task/length_bucket"``."""

ScheduleStep = Annotated[tuple[TokenCount, Confidence], LaxTuple]
"""``(from_tokens, threshold)``: from that many tokens on, this threshold applies."""
Schedule = Annotated[tuple[ScheduleStep, ...], LaxTuple, Field(max_length=MAX_SCHEDULE_STEPS)]


class SegmentPolicy(Part):
    """How one segment stops early."""

    thresholds: Annotated[
        dict[LoadMode, Confidence], Field(json_schema_extra={"required": ["normal"]})
    ]
    """Threshold per load mode; ``"normal"`` is required and is the fallback. A
    threshold of 1.0 is off: no early stop, even at a confidence of exactly 1.0."""
    min_tokens: TokenCount
    """No early stop before this many tokens."""
    token_budget: TokenBudget
    """Generation budget in tokens."""
    schedule: Schedule = ()
    """Optional steps, strictly increasing in ``from_tokens``; once a step
    applies, its threshold replaces the load-mode threshold."""
    schedules: Annotated[dict[LoadMode, Schedule], Field(max_length=3)] = {}
    """Steps of one load mode, used in that mode instead of ``schedule`` (same
    rules). Left out of the JSON when empty, so a policy that does not use it
    has the same bytes, checksum and signature as before."""
    exploration_share: Annotated[float | None, Field(ge=0.0, le=0.5, allow_inf_nan=False)] = None
    """Share of this key's requests run to the natural end (None: the policy's
    ``exploration_share``). Left out of the JSON when None, so a policy that
    does not use it has the same bytes, checksum and signature as before."""

    @model_serializer(mode="wrap")
    def _omit_unset_share(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            if data.get("exploration_share", 0) is None:
                del data["exploration_share"]
            if data.get("schedules", 0) == {}:
                del data["schedules"]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if "normal" not in self.thresholds:
            msg = "thresholds must contain 'normal'"
            raise ValueError(msg)
        if self.min_tokens > self.token_budget:
            msg = "min_tokens exceeds token_budget"
            raise ValueError(msg)
        for steps in (self.schedule, *self.schedules.values()):
            starts = [start for start, _ in steps]
            if any(a >= b for a, b in pairwise(starts)):
                msg = "schedule steps must be sorted by strictly increasing from_tokens"
                raise ValueError(msg)
        return self

    def threshold_at(self, tokens: int, mode: LoadMode = "normal") -> float | None:
        """Return the threshold in force after ``tokens`` tokens, or None.

        Args:
            tokens: Tokens generated so far.
            mode: The node's load mode; a mode without a threshold uses ``"normal"``.

        Returns:
            None before ``min_tokens`` (no early stop); otherwise the last
            step reached of the mode's schedule (``schedules[mode]``, else
            ``schedule``), or else the load-mode threshold.
        """
        if tokens < self.min_tokens:
            return None
        threshold = self.thresholds.get(mode, self.thresholds["normal"])
        for start, step_threshold in self.schedules.get(mode, self.schedule):
            if start > tokens:
                break
            threshold = step_threshold
        return threshold


Segments = Annotated[
    dict[SegmentKey, SegmentPolicy],
    Field(max_length=MAX_SEGMENTS, json_schema_extra={"required": [GLOBAL_SEGMENT]}),
]


class PolicyBody(Part):
    """A full policy: production segments plus an optional canary candidate.

    Both segment maps must contain ``"global"``; lookups fall back along
    :meth:`Segment.ancestors`. The candidate is present exactly when
    ``candidate_version`` is set and ``canary_share > 0`` (in the JSON Schema too).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "required": ["candidate_version", "canary_share"],
                "properties": {
                    "candidate_version": {"type": "integer"},
                    "canary_share": {"exclusiveMinimum": 0},
                },
            },
            "then": {
                "required": ["candidate_segments"],
                "properties": {"candidate_segments": {"type": "object"}},
            },
            "else": {"properties": {"candidate_segments": {"type": "null"}}},
        }
    )

    segments: Segments
    """Production policy per segment key."""
    exploration_share: float = Field(ge=0.0, le=0.5, allow_inf_nan=False)
    """Share of requests run to the natural end with their trajectory recorded."""
    canary_share: Share = 0.0
    """Share of requests served by the candidate."""
    candidate_version: PolicyVersion | None = None
    """Version of the candidate under canary, if any."""
    candidate_segments: Segments | None = None
    """Candidate policy per segment key."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if GLOBAL_SEGMENT not in self.segments:
            msg = "segments must contain 'global'"
            raise ValueError(msg)
        canary = self.candidate_version is not None and self.canary_share > 0
        if canary != (self.candidate_segments is not None):
            msg = "candidate_segments is required iff candidate_version is set and canary_share > 0"
            raise ValueError(msg)
        if self.candidate_segments is not None and GLOBAL_SEGMENT not in self.candidate_segments:
            msg = "candidate_segments must contain 'global'"
            raise ValueError(msg)
        return self

    def policy_for(self, segment: Segment, *, candidate: bool = False) -> SegmentPolicy:
        """Return the most specific policy for ``segment``.

        Args:
            segment: The request's segment.
            candidate: Look in the candidate's segments (falls back to production
                when there is no candidate).
        """
        table = self.candidate_segments if candidate and self.candidate_segments else self.segments
        for key in segment.ancestors():
            if key in table:
                return table[key]
        return table[GLOBAL_SEGMENT]  # unreachable: "global" is required
