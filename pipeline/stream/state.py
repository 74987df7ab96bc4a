"""The join state of one request and its byte format in the Faust table.

:class:`JoinState` is an immutable value: every change makes a new one,
which is what lets Faust log it (a changelog record is only written on
reassignment).

Byte format: one line of compact JSON with the small fields, then the
inference event's and the label's JSON exactly as they arrived (their
lengths are in the header)::

    {"shard":3,"first_seen":1714564800.25,"v":2,"event_ids":[..],"label_ids":[..],
     "feedback":[[id,rating],..],"event":630,"label":160}<newline><event JSON><label JSON>

Writing splices the input bytes instead of serialising the models again
(the header goes through pydantic-core's JSON, several times faster than the
standard library's here), and the two numbers a sweep needs come first so
it can read them without parsing the rest. Reading validates the event and the label again: the
table is rebuilt from a Kafka topic, so its bytes are checked like any input.
Values written before this format (one pydantic JSON object, no newline)
are still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import from_json, to_json

from pipeline.stream.errors import JoinStateError
from schemas.inference import InferenceEvent
from schemas.labels import EMLabel

_FORMAT = 2


@dataclass(frozen=True, slots=True)
class JoinState:
    """Everything known about one request while its join window is open."""

    shard: int
    """The input partition the entry belongs to (where its changelog record goes)."""
    first_seen: float
    """Processing time of the first input, Unix seconds; the window starts here."""
    event: InferenceEvent | None = None
    label: EMLabel | None = None
    event_ids: tuple[str, ...] = ()
    label_ids: tuple[str, ...] = ()
    feedback: tuple[tuple[str, int], ...] = ()
    """``(feedback_id, rating)`` pairs, sorted by id."""
    event_raw: bytes = field(default=b"", repr=False, compare=False)
    """The event's JSON as it arrived (empty: serialise the model)."""
    label_raw: bytes = field(default=b"", repr=False, compare=False)
    """The label's JSON as it arrived (empty: serialise the model)."""

    @property
    def version(self) -> int:
        """The number of distinct inputs absorbed: the version of the next outcome."""
        return len(self.event_ids) + len(self.label_ids) + len(self.feedback)

    @property
    def joined(self) -> bool:
        """True once both the event and a label are present."""
        return self.event is not None and self.label is not None

    def to_bytes(self) -> bytes:
        """The table value."""
        event = self.event_raw or (self.event.to_bytes() if self.event is not None else b"")
        label = self.label_raw or (self.label.to_bytes() if self.label is not None else b"")
        header = {
            "shard": self.shard,
            "first_seen": self.first_seen,
            "v": _FORMAT,
            "event_ids": self.event_ids,
            "label_ids": self.label_ids,
            "feedback": self.feedback,
            "event": len(event),
            "label": len(label),
        }
        return b"".join((to_json(header), b"\n", event, label))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Read a table value written by :meth:`to_bytes` (or by the previous format).

        Raises:
            JoinStateError: the bytes are not a join state.
        """
        head, newline, body = data.partition(b"\n")
        try:
            if not newline:
                return cls._from_legacy(data)
            header = from_json(head)
            sizes = header["event"], header["label"]
            if header["v"] != _FORMAT or len(body) != sum(sizes):
                msg = f"format {header['v']}, {len(body)} body bytes for parts of {sizes}"
                raise ValueError(msg)
            event_raw, label_raw = body[: sizes[0]], body[sizes[0] :]
            return cls(
                shard=int(header["shard"]),
                first_seen=float(header["first_seen"]),
                event=InferenceEvent.from_bytes(event_raw) if event_raw else None,
                label=EMLabel.from_bytes(label_raw) if label_raw else None,
                event_ids=tuple(header["event_ids"]),
                label_ids=tuple(header["label_ids"]),
                feedback=tuple((str(fid), int(rating)) for fid, rating in header["feedback"]),
                event_raw=event_raw,
                label_raw=label_raw,
            )
        except (ValueError, KeyError, TypeError) as exc:  # ValidationError is a ValueError
            msg = f"a stored join state cannot be read ({_first_line(exc)}): {data[:120]!r}"
            raise JoinStateError(msg) from exc

    @classmethod
    def _from_legacy(cls, data: bytes) -> Self:
        old = _LegacyJoinState.model_validate_json(data)
        return cls(**{name: getattr(old, name) for name in _LegacyJoinState.model_fields})


class _LegacyJoinState(BaseModel):
    """The first table format: the whole state as one pydantic JSON object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard: int
    first_seen: float
    event: InferenceEvent | None = None
    label: EMLabel | None = None
    event_ids: tuple[str, ...] = ()
    label_ids: tuple[str, ...] = ()
    feedback: tuple[tuple[str, int], ...] = ()


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return f"{exc.error_count()} validation errors, first: {exc.errors()[0]['msg']}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
