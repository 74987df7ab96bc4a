"""The join state of one request, in compact form, and its byte format in the Faust table.

:class:`JoinState` is an immutable value (a named tuple): every change makes
a new one, which is what lets Faust log it (a changelog record is only
written on reassignment). It does not hold the input models: each input is
validated once, when it arrives, and the state keeps only what the join
needs of it, as plain tuples (:class:`EventView`, :class:`LabelView`):
ids, timestamps for the tie-break, normalised answers for EM, and bytes.

Byte format: one line of compact JSON with the small fields, then the
inference event's JSON and the label's JSON (their lengths are in the
header)::

    {"shard":3,"first_seen":1714564800.25,"v":2,"event_ids":[..],"label_ids":[..],
     "feedback":[[id,rating],..],"event":630,"label":160}<newline><event JSON><label JSON>

The event's JSON is written in its canonical form (what the contract's
serializer writes, and what :class:`~schemas.Outcome` embeds), so an outcome
splices it in as it is; the label's is as it arrived. Writing splices those
bytes instead of serialising anything again (the header goes through
pydantic-core's JSON, several times faster than the standard library's
here), and the two numbers a sweep needs come first so it can read them
without parsing the rest. Reading validates the event and the label again:
the table is rebuilt from a Kafka topic, so its bytes are checked like any
input; and it serialises the event again (about 2 us, on a cache miss only),
because earlier code wrote the same format with the event's JSON as it
arrived. The format number is unchanged, so workers of either version read
each other's states (a rolling upgrade, or a rollback, shares one group and
one changelog). Values of the first format (one pydantic JSON object, no
newline) are still read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import from_json, to_json

from pipeline.stream.em import normalized
from pipeline.stream.errors import JoinStateError
from schemas.inference import InferenceEvent
from schemas.labels import EMLabel

_FORMAT = 2
_validate_event: Callable[[bytes], InferenceEvent] = (
    InferenceEvent.__pydantic_validator__.validate_json
)
_validate_label: Callable[[bytes], EMLabel] = EMLabel.__pydantic_validator__.validate_json
canonical_event: Callable[[InferenceEvent], bytes] = InferenceEvent.__pydantic_serializer__.to_json
"""The contract's JSON of an event: :meth:`~schemas.InferenceEvent.to_bytes` without its frame."""


class EventView(NamedTuple):
    """What the join needs of a validated inference event."""

    request_id: str
    event_id: str
    ts: datetime
    answer: str
    """The final answer, normalised for EM."""
    answers: tuple[str, ...] | None
    """The trajectory's answers, normalised for EM; None without a trajectory."""
    ran_to_end: bool
    """An exploration request, or a natural end: the full answer is known."""
    exploration: bool
    json: bytes
    """The event's canonical JSON (:data:`canonical_event`), as an outcome embeds it."""


class LabelView(NamedTuple):
    """What the join needs of a validated EM label."""

    label_id: str
    ts: datetime
    golds: frozenset[str] | None
    """The gold answers, normalised for EM; None when the label is a verdict."""
    verdict: bool | None
    json: bytes
    """The label's JSON as it arrived."""


def event_view(event: InferenceEvent, json: bytes | None = None) -> EventView:
    """The view of a validated event; ``json``: its canonical JSON, if already known."""
    trajectory = event.trajectory
    norm = normalized
    return EventView(
        event.request_id,
        event.event_id,
        event.ts,
        norm(event.answer),
        tuple([norm(point.answer) for point in trajectory]) if trajectory else None,
        event.exploration or event.stop_reason == "natural_end",
        event.exploration,
        canonical_event(event) if json is None else json,
    )


def label_view(label: EMLabel, json: bytes | None = None) -> LabelView:
    """The view of a validated label; ``json``: the bytes it was validated from, if any."""
    golds = label.gold_answers
    return LabelView(
        label.label_id,
        label.ts,
        frozenset([normalized(gold) for gold in golds]) if golds is not None else None,
        label.verdict,
        label.to_bytes() if json is None else json,
    )


class JoinState(NamedTuple):
    """Everything known about one request while its join window is open."""

    shard: int
    """The input partition the entry belongs to (where its changelog record goes)."""
    first_seen: float
    """Processing time of the first input, Unix seconds; the window starts here."""
    event: EventView | None = None
    label: LabelView | None = None
    event_ids: tuple[str, ...] = ()
    label_ids: tuple[str, ...] = ()
    feedback: tuple[tuple[str, int], ...] = ()
    """``(feedback_id, rating)`` pairs, sorted by id."""

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
        event = b"" if self.event is None else self.event.json
        label = b"" if self.label is None else self.label.json
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
        """Read a table value written by :meth:`to_bytes` (or by an earlier format).

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
                int(header["shard"]),
                float(header["first_seen"]),
                # Serialised again: earlier code kept the event's JSON as it came.
                event_view(_validate_event(event_raw)) if event_raw else None,
                label_view(_validate_label(label_raw), label_raw) if label_raw else None,
                tuple(header["event_ids"]),
                tuple(header["label_ids"]),
                tuple((str(fid), int(rating)) for fid, rating in header["feedback"]),
            )
        except (ValueError, KeyError, TypeError) as exc:  # ValidationError is a ValueError
            msg = f"a stored join state cannot be read ({_first_line(exc)}): {data[:120]!r}"
            raise JoinStateError(msg) from exc

    @classmethod
    def _from_legacy(cls, data: bytes) -> Self:
        old = _LegacyJoinState.model_validate_json(data)
        return cls(
            old.shard,
            old.first_seen,
            event_view(old.event) if old.event is not None else None,
            label_view(old.label) if old.label is not None else None,
            old.event_ids,
            old.label_ids,
            old.feedback,
        )


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
