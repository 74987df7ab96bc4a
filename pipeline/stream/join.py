"""The request join as a pure state machine: no Kafka, no Faust, no clock of its own.

One :class:`JoinState` per ``request_id`` holds the inference event and the
EM label once seen, the ids of every input absorbed and the user feedback.
Each transition takes the current state (or None) and one input, decoded
once into its compact view (:class:`~pipeline.stream.state.EventView`,
:class:`~pipeline.stream.state.LabelView`), and returns the next state, what
happened, and the outcome to emit, if any, as an :class:`OutcomeRecord`: the
key and value bytes of the outcomes topic.

Rules, chosen so that any interleaving or duplication of the same messages
ends in the same final outcome:

- An outcome is emitted after every *new* input once both the event and a
  label are present, in either order; feedback before or after is folded in.
- A duplicate (an ``event_id``, ``label_id`` or ``feedback_id`` already
  absorbed) changes nothing and emits nothing.
- The row version is the number of distinct inputs absorbed, so it grows
  with every emission and depends on the set of inputs, never on their order
  or on redeliveries: a replay re-emits byte-identical rows (but for
  ``joined_at``), which the warehouse collapses.
- Two different events (or labels) for one request: the later ``ts`` wins,
  ties broken by id, so the choice does not depend on arrival order.
- Expiry is by processing time from the first input: an entry with an event
  but no label becomes an unlabeled outcome; one without an event is an
  orphan; a joined entry is simply dropped. Input arriving after its entry
  expired starts a new entry (and usually ends as an orphan).

The state (:mod:`pipeline.stream.state`) serialises to bytes so it can live
in a Faust table; it is immutable, so every change is a reassignment, which
is what makes Faust write it to the changelog.

Outcomes are built as bytes (:func:`build_outcome`), not as
:class:`~schemas.Outcome` models serialised afterwards: the event's canonical
JSON, kept in the state, is spliced in and the few computed fields are
formatted around it. The bytes equal ``Outcome(...).to_bytes()`` of the same
fields (a property test holds them to it), so the outcomes topic's contract
is unchanged; the joiner does not validate them again, because every field
is a validated input or is computed here under the contract's rules (ADR 004).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NamedTuple

from pydantic_core import to_json

from pipeline.stream.em import score_normalized
from pipeline.stream.state import EventView, JoinState, LabelView, event_view, label_view
from schemas._types import TIMESTAMP_MAX, TIMESTAMP_MIN

__all__ = [
    "MAX_INPUTS_PER_REQUEST",
    "EventView",
    "Expiry",
    "JoinState",
    "LabelView",
    "OutcomeRecord",
    "Step",
    "build_outcome",
    "event_view",
    "expire",
    "label_view",
    "on_event",
    "on_feedback",
    "on_label",
]

MAX_INPUTS_PER_REQUEST = 1024
"""Distinct inputs one entry absorbs; more are refused so one key cannot grow without bound."""

StepKind = Literal["pending", "emitted", "duplicate", "overflow"]
ExpiryKind = Literal["open", "joined", "unlabeled", "orphan_label", "orphan_feedback"]


class OutcomeRecord(NamedTuple):
    """One outcome, ready for the outcomes topic: ``Outcome(...).to_bytes()`` keyed by request."""

    key: bytes
    """The request_id, UTF-8: outcomes are keyed like the inputs."""
    value: bytes
    """The outcome's JSON, byte for byte what :meth:`schemas.Outcome.to_bytes` writes."""


class Step(NamedTuple):
    """The result of one transition: write ``state`` back unless the kind is a no-op."""

    state: JoinState
    kind: StepKind
    outcome: OutcomeRecord | None = None

    @property
    def changed(self) -> bool:
        """True when the table must be updated (a reassignment, for the changelog)."""
        return self.kind == "emitted" or self.kind == "pending"


class Expiry(NamedTuple):
    """What a sweep decided for one entry; only ``"open"`` keeps it."""

    kind: ExpiryKind
    outcome: OutcomeRecord | None = None


def _fresh(state: JoinState | None, shard: int, now: datetime) -> JoinState:
    return state if state is not None else JoinState(shard, now.timestamp())


def _insert(ids: tuple[str, ...], new: str) -> tuple[str, ...]:
    return tuple(sorted((*ids, new)))


_JSON = {True: b"true", False: b"false", None: b"null"}
_OUTCOME = (
    b'{"schema_version":1,"request_id":%b,"event":%b,"labeled":%b,"em":%b,"em_full":%b,'
    b'"checkpoint_em":%b,"feedback_count":%d,"negative_feedback":%d,"version":%d,'
    b'"joined_at":%b}'
)
"""An outcome's JSON as the contract's serializer writes it: fields in model order, compact."""
_stamped: tuple[datetime | None, bytes] = (None, b"")


def _joined_at(now: datetime) -> bytes:
    """``now`` as an outcome's ``joined_at`` JSON (once per clock reading: a batch shares one).

    Raises:
        ValueError: ``now`` is naive or outside the contract's timestamps.
    """
    global _stamped
    if _stamped[0] is now:
        return _stamped[1]
    if now.tzinfo is None or not TIMESTAMP_MIN <= now <= TIMESTAMP_MAX:
        msg = f"the clock reads {now!r}: an outcome's joined_at needs an aware time, 1901-2298"
        raise ValueError(msg)
    stamp: bytes = to_json(now.astimezone(UTC))
    _stamped = (now, stamp)
    return stamp


def build_outcome(state: JoinState, now: datetime, *, labeled: bool) -> OutcomeRecord:
    """The outcome record for ``state`` (the event must be present).

    Valid by construction, field by field against :class:`~schemas.Outcome`:
    ``request_id`` and ``event`` are the validated event's, ``checkpoint_em``
    has one entry per trajectory checkpoint and the EM fields are null while
    unlabeled (:func:`~pipeline.stream.em.score_normalized`), the feedback
    counts are counts with ``negative <= count``, the version counts the
    distinct inputs (1 to :data:`MAX_INPUTS_PER_REQUEST`) and ``joined_at``
    is checked once per clock reading.
    """
    event = state.event
    if event is None:
        msg = "an outcome needs the inference event"
        raise ValueError(msg)
    if labeled:
        label = state.label
        if label is None:
            msg = "a labeled outcome needs the label"
            raise ValueError(msg)
        em, em_full, points = score_normalized(
            event.answer,
            event.answers,
            ran_to_end=event.ran_to_end,
            exploration=event.exploration,
            golds=label.golds,
            verdict=label.verdict,
        )
        checkpoints = b"[%b]" % b",".join([_JSON[p] for p in points]) if points else b"null"
        scored = (b"true", _JSON[em], _JSON[em_full], checkpoints)
    else:
        scored = (b"false", b"null", b"null", b"null")
    feedback = state.feedback
    negative = sum(1 for _, rating in feedback if rating < 0) if feedback else 0
    rid = event.request_id
    value = _OUTCOME % (
        to_json(rid),
        event.json,
        *scored,
        len(feedback),
        negative,
        state.version,
        _joined_at(now),
    )
    return OutcomeRecord(rid.encode(), value)


def _after_absorb(state: JoinState, now: datetime) -> Step:
    if state.event is not None and state.label is not None:
        return Step(state, "emitted", build_outcome(state, now, labeled=True))
    return Step(state, "pending")


def _full(state: JoinState) -> bool:
    return state.version >= MAX_INPUTS_PER_REQUEST


def on_event(state: JoinState | None, event: EventView, *, shard: int, now: datetime) -> Step:
    """Absorb an inference event."""
    c = _fresh(state, shard, now)
    if event.event_id in c.event_ids:
        return Step(c, "duplicate")
    if _full(c):
        return Step(c, "overflow")
    kept = c.event
    if kept is None or (event.ts, event.event_id) > (kept.ts, kept.event_id):
        kept = event
    ids = _insert(c.event_ids, event.event_id)
    new = JoinState(c.shard, c.first_seen, kept, c.label, ids, c.label_ids, c.feedback)
    return _after_absorb(new, now)


def on_label(state: JoinState | None, label: LabelView, *, shard: int, now: datetime) -> Step:
    """Absorb an EM label."""
    c = _fresh(state, shard, now)
    if label.label_id in c.label_ids:
        return Step(c, "duplicate")
    if _full(c):
        return Step(c, "overflow")
    kept = c.label
    if kept is None or (label.ts, label.label_id) > (kept.ts, kept.label_id):
        kept = label
    ids = _insert(c.label_ids, label.label_id)
    new = JoinState(c.shard, c.first_seen, c.event, kept, c.event_ids, ids, c.feedback)
    return _after_absorb(new, now)


def on_feedback(
    state: JoinState | None, feedback_id: str, rating: int, *, shard: int, now: datetime
) -> Step:
    """Absorb one piece of user feedback; its id counts once however often it arrives."""
    c = _fresh(state, shard, now)
    if any(fid == feedback_id for fid, _ in c.feedback):
        return Step(c, "duplicate")
    if _full(c):
        return Step(c, "overflow")
    pairs = tuple(sorted((*c.feedback, (feedback_id, rating))))
    new = JoinState(c.shard, c.first_seen, c.event, c.label, c.event_ids, c.label_ids, pairs)
    return _after_absorb(new, now)


def expire(state: JoinState, now: datetime, window_s: float) -> Expiry:
    """Decide whether the entry's window has closed, and what it leaves behind."""
    if now.timestamp() < state.first_seen + window_s:
        return Expiry("open")
    if state.joined:
        return Expiry("joined")
    if state.event is not None:
        return Expiry("unlabeled", build_outcome(state, now, labeled=False))
    if state.label is not None:
        return Expiry("orphan_label")
    return Expiry("orphan_feedback")
