"""The trajectory file: one request run to its natural end, one JSON object per line.

Written by ``pipeline capture`` (a real model answering a labeled question
file), read by ``pipeline calibrate`` (a first policy before live traffic) and
``pipeline sim --trace`` (a fleet replaying real model behaviour). It is a
file format, not a topic message: no ``schema_version`` field, and unknown
fields are refused so a typo never passes silently. Its JSON Schema is
``schemas/json/trajectory.schema.json``.

Segment keys: the full key is ``"tenant/task/length_bucket"``. Shorter keys
are accepted by one documented mapping (:func:`segment_from_key`):
``"family/kind"`` (as in evaluation sets such as ``math/sub``) is tenant
``family``, task ``kind``; a single ``"task"`` is tenant ``default``. The
length bucket then comes from ``tokens_prompt`` when the record has it
(:func:`~schemas.inference.length_bucket`), else ``"short"``.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from schemas._base import Part
from schemas._types import MAX_TOKENS, Id, LaxTuple, LongText, ShortText, TokenCount
from schemas.inference import Segment, Trajectory, length_bucket

DEFAULT_TENANT = "default"
"""The tenant of a one-part segment key."""

Golds = Annotated[tuple[ShortText, ...], LaxTuple, Field(min_length=1, max_length=64)]


class TrajectoryRecord(Part):
    """One labeled generation, with a checkpoint every few tokens until its natural end.

    Rules beyond the field bounds: checkpoint token counts strictly increase
    and never exceed ``tokens_full``.
    """

    request_id: Id
    """Unique within the file (``pipeline capture`` resumes by it)."""
    segment: Annotated[str, Field(min_length=1, max_length=200)]
    """``"tenant/task/length_bucket"``, or a shorter key (see the module doc)."""
    gold: Golds
    """Accepted answers; a single string is read as a one-item list."""
    tokens_full: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    """Tokens the full generation took (its natural end or the budget)."""
    final_answer: LongText
    """The answer of the full generation."""
    checkpoints: Trajectory
    """Trial answers and confidences along the generation, in token order."""
    question: LongText | None = None
    """The prompt's question, for people reading the file."""
    tokens_prompt: TokenCount | None = None
    """Prompt length in tokens; sets the length bucket of a short segment key."""
    probe_tokens: TokenCount = 0
    """Tokens one confidence probe costs (each checkpoint spends this many)."""
    model: Id | None = None
    """The model that generated it."""
    secs: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    """Wall-clock seconds of the full generation."""

    @field_validator("gold", mode="before")
    @classmethod
    def _one_gold(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("segment")
    @classmethod
    def _segment_parses(cls, value: str) -> str:
        segment_from_key(value)  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _checkpoints_in_order(self) -> Self:
        previous = -1
        for point in self.checkpoints:
            if point.tokens <= previous:
                msg = "checkpoint token counts must strictly increase"
                raise ValueError(msg)
            previous = point.tokens
        if previous > self.tokens_full:
            msg = f"a checkpoint at {previous} tokens is beyond tokens_full ({self.tokens_full})"
            raise ValueError(msg)
        return self

    def segment_value(self) -> Segment:
        """The record's segment, with the short-key mapping applied."""
        return segment_from_key(self.segment, self.tokens_prompt)

    @classmethod
    def from_line(cls, line: str | bytes) -> TrajectoryRecord:
        """Parse one JSON line (lenient on tuples: JSON arrays are fine)."""
        return cls.model_validate_json(line)

    def to_line(self) -> str:
        """One compact JSON line, without the trailing newline."""
        return self.model_dump_json(exclude_none=True)


def segment_from_key(key: str, tokens_prompt: int | None = None) -> Segment:
    """The segment of a trajectory-file key (see the module doc for short keys).

    Raises:
        ValueError: the key has more than three parts or a part breaks the segment rules.
    """
    parts = key.split("/")
    bucket = length_bucket(tokens_prompt) if tokens_prompt is not None else "short"
    if len(parts) == 3:
        tenant, task, given = parts
        return Segment.model_validate({"tenant": tenant, "task": task, "length_bucket": given})
    if len(parts) == 2:
        return Segment(tenant=parts[0], task=parts[1], length_bucket=bucket)
    if len(parts) == 1:
        return Segment(tenant=DEFAULT_TENANT, task=parts[0], length_bucket=bucket)
    msg = f"segment key {key!r} has {len(parts)} parts; expected tenant/task/length_bucket"
    raise ValueError(msg)


FILE_TYPES: dict[str, type[Part]] = {"trajectory": TrajectoryRecord}
"""File formats with a JSON Schema beside the messages', by stable name."""
