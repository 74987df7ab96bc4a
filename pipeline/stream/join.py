"""The request join as a pure state machine: no Kafka, no Faust, no clock of its own.

One :class:`JoinState` per ``request_id`` holds the inference event and the
EM label once seen, the ids of every input absorbed and the user feedback.
Each transition takes the current state (or None) and one message and
returns the next state, what happened, and the :class:`~schemas.Outcome` to
emit, if any.

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
is what makes Faust write it to the changelog. ``on_event`` and ``on_label``
take the message's wire bytes too, when the caller has them, so the state
stores them as they are instead of serialising the model again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pipeline.stream.em import score
from pipeline.stream.state import JoinState
from schemas.inference import InferenceEvent
from schemas.labels import EMLabel, UserFeedback
from schemas.outcome import Outcome

__all__ = [
    "MAX_INPUTS_PER_REQUEST",
    "Expiry",
    "JoinState",
    "Step",
    "build_outcome",
    "expire",
    "on_event",
    "on_feedback",
    "on_label",
]

MAX_INPUTS_PER_REQUEST = 1024
"""Distinct inputs one entry absorbs; more are refused so one key cannot grow without bound."""

_validate_outcome: Callable[[dict[str, object]], Outcome] = (
    Outcome.__pydantic_validator__.validate_python
)

StepKind = Literal["pending", "emitted", "duplicate", "overflow"]
ExpiryKind = Literal["open", "joined", "unlabeled", "orphan_label", "orphan_feedback"]


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one transition: write ``state`` back unless the kind is a no-op."""

    state: JoinState
    kind: StepKind
    outcome: Outcome | None = None

    @property
    def changed(self) -> bool:
        """True when the table must be updated (a reassignment, for the changelog)."""
        return self.kind in {"pending", "emitted"}


@dataclass(frozen=True, slots=True)
class Expiry:
    """What a sweep decided for one entry; only ``"open"`` keeps it."""

    kind: ExpiryKind
    outcome: Outcome | None = None


def _fresh(state: JoinState | None, shard: int, now: datetime) -> JoinState:
    return state if state is not None else JoinState(shard=shard, first_seen=now.timestamp())


def _insert(ids: tuple[str, ...], new: str) -> tuple[str, ...]:
    return tuple(sorted((*ids, new)))


def build_outcome(state: JoinState, now: datetime, *, labeled: bool) -> Outcome:
    """The outcome row for ``state`` (the event must be present)."""
    event = state.event
    if event is None:
        msg = "an outcome needs the inference event"
        raise ValueError(msg)
    em = em_full = points = None
    if labeled:
        if state.label is None:
            msg = "a labeled outcome needs the label"
            raise ValueError(msg)
        scores = score(event, state.label)
        em, em_full, points = scores.em, scores.em_full, scores.checkpoint_em
    feedback = state.feedback
    return _validate_outcome(
        {  # Outcome(**fields) without BaseModel.__init__'s Python frame
            "request_id": event.request_id,
            "event": event,
            "labeled": labeled,
            "em": em,
            "em_full": em_full,
            "checkpoint_em": points,
            "feedback_count": len(feedback),
            "negative_feedback": sum(1 for _, rating in feedback if rating < 0) if feedback else 0,
            "version": state.version,
            "joined_at": now,
        }
    )


def _after_absorb(state: JoinState, now: datetime) -> Step:
    if state.joined:
        return Step(state, "emitted", build_outcome(state, now, labeled=True))
    return Step(state, "pending")


def _full(state: JoinState) -> bool:
    return state.version >= MAX_INPUTS_PER_REQUEST


def on_event(
    state: JoinState | None,
    event: InferenceEvent,
    *,
    shard: int,
    now: datetime,
    raw: bytes = b"",
) -> Step:
    """Absorb an inference event (``raw``: the bytes it was validated from, if known)."""
    current = _fresh(state, shard, now)
    if event.event_id in current.event_ids:
        return Step(current, "duplicate")
    if _full(current):
        return Step(current, "overflow")
    kept, kept_raw = current.event, current.event_raw
    if kept is None or (event.ts, event.event_id) > (kept.ts, kept.event_id):
        kept, kept_raw = event, raw
    c = current  # spelled out: dataclasses.replace cost more than the rest of the step
    new = JoinState(c.shard, c.first_seen, kept, c.label, _insert(c.event_ids, event.event_id),
                    c.label_ids, c.feedback, kept_raw, c.label_raw)  # fmt: skip
    return _after_absorb(new, now)


def on_label(
    state: JoinState | None,
    label: EMLabel,
    *,
    shard: int,
    now: datetime,
    raw: bytes = b"",
) -> Step:
    """Absorb an EM label (``raw``: the bytes it was validated from, if known)."""
    current = _fresh(state, shard, now)
    if label.label_id in current.label_ids:
        return Step(current, "duplicate")
    if _full(current):
        return Step(current, "overflow")
    kept, kept_raw = current.label, current.label_raw
    if kept is None or (label.ts, label.label_id) > (kept.ts, kept.label_id):
        kept, kept_raw = label, raw
    c = current
    ids = _insert(c.label_ids, label.label_id)
    new = JoinState(c.shard, c.first_seen, c.event, kept, c.event_ids, ids, c.feedback,
                    c.event_raw, kept_raw)  # fmt: skip
    return _after_absorb(new, now)


def on_feedback(
    state: JoinState | None, feedback: UserFeedback, *, shard: int, now: datetime
) -> Step:
    """Absorb one piece of user feedback; its id counts once however often it arrives."""
    current = _fresh(state, shard, now)
    if any(fid == feedback.feedback_id for fid, _ in current.feedback):
        return Step(current, "duplicate")
    if _full(current):
        return Step(current, "overflow")
    c = current
    pairs = tuple(sorted((*c.feedback, (feedback.feedback_id, feedback.rating))))
    new = JoinState(c.shard, c.first_seen, c.event, c.label, c.event_ids, c.label_ids, pairs,
                    c.event_raw, c.label_raw)  # fmt: skip
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
