"""Records in, outcomes and dead letters out: the joiner without Kafka or Faust.

:class:`Processor` decodes each input record with its contract, checks that
it is keyed by its ``request_id`` (the join relies on co-partitioning by that
key), runs the join transition on the state in a
:class:`~pipeline.stream.store.StateStore`, and says what to produce:
outcomes as :class:`~pipeline.stream.join.OutcomeRecord` (key and value
bytes, ready for the outcomes topic) and dead letters. Each input is decoded
once: validated with its contract, then kept in the state in compact form
(:mod:`pipeline.stream.state`). Bad
input is data, not an exception: it comes back as a :class:`~schemas.DeadLetter`
that keeps the raw bytes and where they came from, and processing goes on.
The only exception is a join state that cannot be read back, a bug or a bad
upgrade, which must stop the worker loudly.

Records are processed in batches (:meth:`Processor.process_batch`): a key's
state is read once, carried through the batch's records in memory and
written back once at the end, so a batch costs one store write (one
changelog record) per key it changed, and its counters take one lock.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple, cast

from pydantic import ValidationError

from pipeline.stream import join
from pipeline.stream.errors import JoinStateError
from pipeline.stream.join import OutcomeRecord
from pipeline.stream.metrics import Metrics, Series
from pipeline.stream.state import event_view, label_view
from pipeline.stream.store import DictStore, StateCache, StateStore
from schemas import DeadLetter, EMLabel, ErrorKind, InferenceEvent, UserFeedback

__all__ = [
    "INPUTS",
    "JoinBatch",
    "DictStore",
    "Processor",
    "InputRecord",
    "RejectedError",
    "JoinResult",
    "OutcomeRecord",
    "Source",
    "StateStore",
    "decode",
]

Source = Literal["inference-events", "em-labels", "user-feedback"]
INPUTS: tuple[Source, ...] = ("inference-events", "em-labels", "user-feedback")
"""The logical names of the three co-partitioned join inputs."""

_CONTRACTS: dict[Source, type[InferenceEvent] | type[EMLabel] | type[UserFeedback]] = {
    "inference-events": InferenceEvent,
    "em-labels": EMLabel,
    "user-feedback": UserFeedback,
}
_VALIDATORS: dict[Source, Callable[[bytes], InferenceEvent | EMLabel | UserFeedback]] = {
    source: contract.__pydantic_validator__.validate_json for source, contract in _CONTRACTS.items()
}
# A join state's bytes start with the two numbers a sweep needs; reading them
# avoids decoding every open entry (see pipeline.stream.state).
_HEADER = re.compile(rb'^\{"shard":(-?\d+),"first_seen":([0-9.eE+-]+),')


class InputRecord(NamedTuple):
    """One consumed input record, as the transport handed it over (a tuple: made per record)."""

    source: Source
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class RejectedError(Exception):
    """A record that breaks its contract (carried to the dead-letter topic, never raised out)."""

    def __init__(self, error: str, *, kind: ErrorKind) -> None:
        super().__init__(error)
        self.kind: ErrorKind = kind
        self.error = error


def decode(record: InputRecord) -> InferenceEvent | EMLabel | UserFeedback:
    """Parse and validate a record against its topic's contract and key.

    Raises:
        RejectedError: ``decode`` when the bytes are not JSON, ``validate`` when
            the message breaks its contract or is not keyed by its request_id.
    """
    if record.value is None:
        msg = "the record has no value (a tombstone on an input topic)"
        raise RejectedError(msg, kind="decode")
    try:
        # The contract's validator itself: Message.from_bytes without two Python frames.
        message = _VALIDATORS[record.source](record.value)
    except ValidationError as exc:
        kind: ErrorKind = "decode" if exc.errors()[0]["type"] == "json_invalid" else "validate"
        raise RejectedError(str(exc), kind=kind) from None
    if record.key != message.request_id.encode():
        msg = (
            f"record key {record.key!r} is not the request_id {message.request_id!r}: "
            f"producers must key every input by request_id so the inputs are co-partitioned"
        )
        raise RejectedError(msg, kind="validate")
    return message


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What to produce for one record: an outcome, a dead letter, or nothing."""

    outcome: OutcomeRecord | None = None
    dead_letter: DeadLetter | None = None


@dataclass(frozen=True, slots=True)
class JoinBatch:
    """What to produce for a batch of records, in input order."""

    outcomes: list[OutcomeRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))


_RECORDS = {source: _series("stream_records_total", topic=source) for source in INPUTS}
_STEPS = {
    (source, kind): _series("stream_join_steps_total", input=source, result=kind)
    for source in INPUTS
    for kind in ("pending", "emitted", "duplicate", "overflow")
}
_JOINED = _series("stream_outcomes_total", reason="joined")
_DUPLICATE, _UNREAD = object(), object()
"""What :meth:`Processor._kept` says besides a state: a redelivery, or no state read."""


class Processor:
    """The join over a state store, with its counters."""

    def __init__(
        self,
        store: StateStore,
        worker_id: str,
        metrics: Metrics | None = None,
        *,
        cache_entries: int = 20_000,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.metrics = metrics or Metrics()
        self.cache = StateCache(cache_entries)

    def process(self, record: InputRecord, now: datetime) -> JoinResult:
        """Handle one input record."""
        batch = self.process_batch([record], now)
        return JoinResult(
            outcome=batch.outcomes[0] if batch.outcomes else None,
            dead_letter=batch.dead_letters[0] if batch.dead_letters else None,
        )

    def process_batch(self, records: Sequence[InputRecord], now: datetime) -> JoinBatch:
        """Handle records in order; write each changed state back once, at the end.

        Raises:
            JoinStateError: a stored state cannot be read; nothing of the batch is written.
        """
        counts: Counter[Series] = Counter()
        changed: dict[str, join.JoinState] = {}
        out = JoinBatch()
        outcomes, load = out.outcomes, self._load
        for record in records:
            source = record.source
            counts[_RECORDS[source]] += 1
            seen = self._kept(record, changed)
            if seen is _DUPLICATE:
                counts[_STEPS[source, "duplicate"]] += 1
                continue
            try:
                message = decode(record)
            except RejectedError as exc:
                letters = _series("stream_dead_letters_total", topic=source, kind=exc.kind)
                counts[letters] += 1
                out.dead_letters.append(self._dead_letter(record, exc, now))
                continue
            key = message.request_id
            if seen is _UNREAD:
                state = changed[key] if key in changed else load(key)
            else:  # decode checked that the record's key is this request_id
                state = cast("join.JoinState | None", seen)
            shard = record.partition
            if isinstance(message, InferenceEvent):
                step = join.on_event(state, event_view(message), shard=shard, now=now)
            elif isinstance(message, EMLabel):
                step = join.on_label(state, label_view(message, record.value), shard=shard, now=now)
            else:
                step = join.on_feedback(
                    state, message.feedback_id, message.rating, shard=shard, now=now
                )
            counts[_STEPS[source, step.kind]] += 1
            if step.changed:
                changed[key] = step.state
            if step.outcome is not None:
                outcomes.append(step.outcome)
        if outcomes:
            counts[_JOINED] += len(outcomes)
        for key, state in changed.items():
            raw = state.to_bytes()
            self.store.put(key, raw, state.shard)  # a new value: Faust logs it
            self.cache.remember(key, raw, state)
        self.metrics.add(counts)
        return out

    def _kept(
        self, record: InputRecord, changed: dict[str, join.JoinState]
    ) -> join.JoinState | None | object:
        """The state of the record's key, read once for the whole record.

        :data:`_DUPLICATE` when the record is the very bytes of the event or
        label its state keeps (an event's canonical JSON, which is what this
        project's producers write; a label's JSON as it came): those passed
        :func:`decode` under this key and their id is in the state, so
        decoding them again could only end in ``"duplicate"``. :data:`_UNREAD`
        when the state was not read (no key that decodes, feedback, or a state
        that cannot be read: the usual path reports it). Otherwise the state
        (None: no entry yet).
        """
        value, key = record.value, record.key
        if not value or key is None:
            return _UNREAD
        try:
            request_id = key.decode()
        except UnicodeDecodeError:
            return _UNREAD
        try:
            state = changed[request_id] if request_id in changed else self._load(request_id)
        except JoinStateError:
            return _UNREAD  # decided on the usual path, which reports it
        if state is None or record.source == "user-feedback":
            return state
        kept = state.event if record.source == "inference-events" else state.label
        return _DUPLICATE if kept is not None and kept.json == value else state

    def _load(self, key: str) -> join.JoinState | None:
        raw = self.store.get(key)
        return self.cache.load(key, raw) if raw is not None else None

    def _dead_letter(self, record: InputRecord, exc: RejectedError, now: datetime) -> DeadLetter:
        return DeadLetter.capture(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            raw=record.value or b"",
            error=exc.error,
            error_kind=exc.kind,
            ts=now,
            worker_id=self.worker_id,
        )

    def expire(
        self, now: datetime, window_s: float, shards: Collection[int] | None = None
    ) -> Iterator[OutcomeRecord]:
        """Close the entries whose window has passed; yield their unlabeled outcomes.

        ``shards`` are the partitions this worker owns now; entries of other
        partitions are dropped locally (their new owner has them) and never
        expired here, so a rebalance cannot emit an outcome twice.
        """
        deadline = now.timestamp() - window_s
        held = 0
        for key, _ in self.store.items():
            # Read again: between two yields the agent may have updated the entry,
            # and deciding on a stale copy could expire a request that just joined.
            raw = self.store.get(key)
            if raw is None:
                continue
            header = _HEADER.match(raw)
            shard, first_seen = (int(header[1]), float(header[2])) if header else _parse_header(raw)
            if shards is not None and shard not in shards:
                self.store.forget(key)
                self.cache.drop(key)
                continue
            if first_seen > deadline:
                held += 1
                continue
            expiry = join.expire(self.cache.load(key, raw), now, window_s)
            if expiry.kind == "open":  # only if the header and the body disagree
                held += 1
                continue
            self.store.delete(key, shard)
            self.cache.drop(key)
            if expiry.kind in {"orphan_label", "orphan_feedback"}:
                self.metrics.inc("stream_orphans_total", kind=expiry.kind)
            if expiry.outcome is not None:
                self.metrics.inc("stream_outcomes_total", reason="unlabeled")
                yield expiry.outcome
        self.metrics.set("stream_join_entries", held)


def _parse_header(raw: bytes) -> tuple[int, float]:
    state = join.JoinState.from_bytes(raw)  # an unexpected layout: read it all
    return state.shard, state.first_seen
