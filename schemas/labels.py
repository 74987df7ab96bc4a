"""Ground truth and user signals about a request, joined by ``request_id``."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import ConfigDict, Field, model_validator

from schemas._base import Message
from schemas._types import FeedbackKind, Id, LaxTuple, LongText, ShortText, Timestamp

MAX_GOLD_ANSWERS = 16

GoldAnswers = Annotated[
    tuple[ShortText, ...],
    LaxTuple,
    Field(min_length=1, max_length=MAX_GOLD_ANSWERS),
]


class EMLabel(Message):
    """A labeler's judgement of one request.

    Exactly one of ``gold_answers`` (the answer is scored by exact match
    against any of them) or ``verdict`` (the labeler scored it directly).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["gold_answers"], "properties": {"gold_answers": {"type": "array"}}},
                {"required": ["verdict"], "properties": {"verdict": {"type": "boolean"}}},
            ]
        }
    )

    label_id: Id
    """Unique id of this label."""
    request_id: Id
    """The labeled request; also the Kafka key."""
    labeler_id: Id
    """Who (or which process) labeled it."""
    ts: Timestamp
    """When the label was made."""
    gold_answers: GoldAnswers | None = None
    """Acceptable answers, 1 to 16."""
    verdict: bool | None = None
    """True when the final answer is correct."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.gold_answers is None) == (self.verdict is None):
            msg = "give exactly one of gold_answers or verdict"
            raise ValueError(msg)
        return self


class UserFeedback(Message):
    """A signal from the end user about an answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"required": ["correction"], "properties": {"correction": {"type": "string"}}},
            "then": {"properties": {"kind": {"const": "correction"}}},
        }
    )

    feedback_id: Id
    """Unique id of this feedback."""
    request_id: Id
    """The request it is about; also the Kafka key."""
    ts: Timestamp
    """When the user gave it."""
    kind: FeedbackKind
    """Thumbs up/down, a written correction, or a regenerate click."""
    rating: int = Field(ge=-1, le=1)
    """-1 negative, 0 neutral, 1 positive."""
    correction: LongText | None = None
    """The user's corrected answer; only with kind ``"correction"``."""

    @model_validator(mode="after")
    def _correction_matches_kind(self) -> Self:
        if self.correction is not None and self.kind != "correction":
            msg = "correction text is only allowed with kind 'correction'"
            raise ValueError(msg)
        return self
