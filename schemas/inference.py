"""What an inference node reports for each request."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from schemas._base import Message, Part
from schemas._types import (
    MAX_TRAJECTORY_POINTS,
    Arm,
    Confidence,
    EventPolicyVersion,
    Id,
    LatencyMs,
    LaxTuple,
    LengthBucket,
    LongText,
    SegmentPart,
    ShortText,
    StopReason,
    Timestamp,
    TokenBudget,
    TokenCount,
)

LENGTH_BUCKET_EDGES = (128, 768)
"""Prompt tokens where ``medium`` and ``long`` start: below 128 is short, 768 on is long."""

GLOBAL_SEGMENT = "global"
"""The key of the policy that applies when no more specific segment matches."""


def segment_ancestors(key: str) -> tuple[str, ...]:
    """The segment fallback rule: the lookup keys of a policy key, most specific first.

    ``"tenant/task/length_bucket"`` falls back to ``"task"``, then ``"global"``;
    any other key to ``"global"``. A policy uses the first key it holds. Nodes,
    the contracts and the optimizer all resolve segments with this one function.
    """
    if key == GLOBAL_SEGMENT:
        return (GLOBAL_SEGMENT,)
    parts = key.split("/")
    if len(parts) == 3:
        return (key, parts[1], GLOBAL_SEGMENT)
    return (key, GLOBAL_SEGMENT)


def length_bucket(prompt_tokens: int) -> LengthBucket:
    """The length bucket of a prompt of ``prompt_tokens`` tokens (the one rule; see the edges)."""
    if prompt_tokens < LENGTH_BUCKET_EDGES[0]:
        return "short"
    if prompt_tokens < LENGTH_BUCKET_EDGES[1]:
        return "medium"
    return "long"


class Segment(Part):
    """The features a policy is chosen by.

    A segment has three keys, most specific first (see :meth:`ancestors`):
    ``"<tenant>/<task>/<length_bucket>"``, ``"<task>"`` and ``"global"``.
    Task ``"global"`` is refused so that the keys cannot collide.
    """

    task: Annotated[SegmentPart, Field(json_schema_extra={"not": {"const": GLOBAL_SEGMENT}})]
    """Task type, e.g. ``"qa"``; never ``"global"``."""
    length_bucket: LengthBucket
    """Prompt length bucket."""
    tenant: SegmentPart
    """The tenant the request belongs to."""

    @field_validator("task")
    @classmethod
    def _task_is_not_global(cls, value: str) -> str:
        if value == GLOBAL_SEGMENT:
            msg = f"task {GLOBAL_SEGMENT!r} is reserved for the fallback policy"
            raise ValueError(msg)
        return value

    def key(self) -> str:
        """Return the most specific key, ``"tenant/task/length_bucket"``."""
        return f"{self.tenant}/{self.task}/{self.length_bucket}"

    def ancestors(self) -> tuple[str, ...]:
        """Return the policy lookup keys, most specific first (:func:`segment_ancestors`)."""
        return segment_ancestors(self.key())


class Checkpoint(Part):
    """One point of a generation trajectory."""

    tokens: TokenCount
    """Tokens generated so far."""
    confidence: Confidence
    """Confidence at this point."""
    answer: ShortText
    """The trial answer extracted at this point."""


Trajectory = Annotated[
    tuple[Checkpoint, ...],
    LaxTuple,
    Field(min_length=1, max_length=MAX_TRAJECTORY_POINTS),
]


class InferenceEvent(Message):
    """One finished inference request, as the node saw it.

    Rules beyond the field bounds:

    - ``tokens_generated <= tokens_budget``; a ``"budget"`` stop used all of it.
    - A ``"confident"`` stop had a threshold and reached it.
    - Exploration requests run with no threshold and carry a trajectory.
    - Trajectory token counts strictly increase and never exceed
      ``tokens_generated``.

    The JSON Schema states the rules on nulls (``if``/``then``); comparisons
    between two fields' values it cannot state, so only the models check those.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "required": ["exploration"],
                        "properties": {"exploration": {"const": True}},
                    },
                    "then": {
                        "required": ["trajectory"],
                        "properties": {
                            "threshold": {"type": "null"},
                            "trajectory": {"not": {"type": "null"}},
                        },
                    },
                },
                {
                    "if": {
                        "required": ["stop_reason"],
                        "properties": {"stop_reason": {"const": "confident"}},
                    },
                    "then": {"properties": {"threshold": {"not": {"type": "null"}}}},
                },
            ]
        }
    )

    event_id: Id
    """Unique id of this event (producers may retry; consumers dedupe on it)."""
    request_id: Id
    """The request; also the Kafka key, shared with labels and feedback."""
    node_id: Id
    """The inference node that served the request."""
    ts: Timestamp
    """When the request finished."""
    model: Id
    """Model name and revision."""
    segment: Segment
    """Features the policy was chosen by."""
    policy_name: Id
    """The policy the node applied."""
    policy_version: EventPolicyVersion
    """Version of that policy; 0 before the node received any. At most 2**32 - 1
    (the warehouse column is ``UInt32``): billions of versions, far beyond any rollout."""
    threshold: Confidence | None
    """The threshold actually used; None when early stopping was not allowed."""
    arm: Arm
    """Whether the production or the canary candidate policy served it."""
    exploration: bool
    """True for the share of requests run to the natural end to learn from."""
    tokens_prompt: TokenCount
    """Prompt length in tokens."""
    tokens_generated: TokenCount
    """Tokens generated before stopping (the answer's tokens; probes not included)."""
    tokens_probe: TokenCount = 0
    """Tokens spent on confidence probes (trial answers at checkpoints): a cost of
    early stopping, netted out of every saving. 0 for engines whose confidence is free."""
    tokens_budget: TokenBudget
    """Generation budget in tokens."""
    stop_reason: StopReason
    """Why generation stopped."""
    confidence: Confidence
    """Confidence at the stop."""
    answer: LongText
    """The final answer returned to the user."""
    latency_ms: LatencyMs
    """End-to-end latency in milliseconds, 0 to 7 days (604,800,000): a product bound
    far above any request timeout, and one the warehouse's ``Float32`` column holds."""
    node_load: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    """Node utilisation at the time, 0 (idle) to 1 (saturated)."""
    trajectory: Trajectory | None = None
    """Checkpoints of the generation; required for exploration requests."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problem = self._tokens_problem() or self._stop_problem() or self._trajectory_problem()
        if problem:
            raise ValueError(problem)
        return self

    def _tokens_problem(self) -> str | None:
        if self.tokens_generated > self.tokens_budget:
            return (
                f"tokens_generated ({self.tokens_generated}) exceeds "
                f"tokens_budget ({self.tokens_budget})"
            )
        if self.stop_reason == "budget" and self.tokens_generated != self.tokens_budget:
            return "stop_reason 'budget' requires tokens_generated == tokens_budget"
        return None

    def _stop_problem(self) -> str | None:
        if self.exploration and self.threshold is not None:
            return "exploration requests run without a threshold (threshold must be null)"
        if self.stop_reason == "confident":
            if self.threshold is None:
                return "stop_reason 'confident' requires a threshold"
            if self.confidence < self.threshold:
                return "stop_reason 'confident' requires confidence >= threshold"
        return None

    def _trajectory_problem(self) -> str | None:
        if self.trajectory is None:
            return "exploration requests must carry a trajectory" if self.exploration else None
        previous = -1
        for point in self.trajectory:
            if point.tokens <= previous:
                return "trajectory token counts must strictly increase"
            previous = point.tokens
        if previous > self.tokens_generated:
            return "trajectory goes beyond tokens_generated"
        return None
