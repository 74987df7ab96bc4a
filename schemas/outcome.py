"""The joined record: one request with its labels and feedback."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import ConfigDict, Field, model_validator

from schemas._base import Message
from schemas._types import MAX_TRAJECTORY_POINTS, Count, Id, LaxTuple, Timestamp, Version
from schemas.inference import InferenceEvent

CheckpointEM = Annotated[
    tuple[bool, ...],
    LaxTuple,
    Field(min_length=1, max_length=MAX_TRAJECTORY_POINTS),
]


class Outcome(Message):
    """Everything needed to analyse one request.

    The joiner may emit a request again when a label or feedback arrives
    late; each emission has a higher ``version`` and replaces the previous
    row (ClickHouse ``ReplacingMergeTree(version)``).

    Rules beyond the field bounds: ``request_id`` equals the event's; the
    EM fields are null while unlabeled; ``checkpoint_em`` is aligned with the
    event's trajectory; ``negative_feedback <= feedback_count``. The JSON
    Schema states the rules on nulls (``if``/``then``); the equalities and the
    comparison between fields only the model checks.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"required": ["labeled"], "properties": {"labeled": {"const": False}}},
            "then": {
                "properties": {
                    "em": {"type": "null"},
                    "em_full": {"type": "null"},
                    "checkpoint_em": {"type": "null"},
                }
            },
            "else": {"required": ["em"], "properties": {"em": {"type": "boolean"}}},
        }
    )

    request_id: Id
    """The request; equal to ``event.request_id``."""
    event: InferenceEvent
    """The inference event as the node reported it."""
    labeled: bool
    """True once an EM label has been joined."""
    em: bool | None = None
    """Exact match of the final answer; null when unlabeled."""
    em_full: bool | None = None
    """Exact match of the full-generation answer when known (for exploration
    requests, the last trajectory checkpoint); null when unknown."""
    checkpoint_em: CheckpointEM | None = None
    """Exact match of each trajectory checkpoint, aligned with the trajectory."""
    feedback_count: Count = 0
    """User feedback messages joined so far."""
    negative_feedback: Count = 0
    """Of those, how many were negative (rating -1)."""
    version: Version
    """Row version; a later emission for the same request is higher."""
    joined_at: Timestamp
    """When this row version was produced."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problem = self._label_problem() or self._feedback_problem()
        if problem:
            raise ValueError(problem)
        return self

    def _label_problem(self) -> str | None:
        if self.request_id != self.event.request_id:
            return "request_id differs from event.request_id"
        if not self.labeled:
            if self.em is not None or self.em_full is not None or self.checkpoint_em is not None:
                return "em, em_full and checkpoint_em must be null while unlabeled"
            return None
        if self.em is None:
            return "a labeled outcome needs em"
        if self.checkpoint_em is not None:
            trajectory = self.event.trajectory
            if trajectory is None or len(trajectory) != len(self.checkpoint_em):
                return "checkpoint_em must have one entry per trajectory checkpoint"
        return None

    def _feedback_problem(self) -> str | None:
        if self.negative_feedback > self.feedback_count:
            return "negative_feedback exceeds feedback_count"
        return None
