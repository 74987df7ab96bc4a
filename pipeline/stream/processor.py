"""Records in, outcomes and dead letters out: the joiner without Kafka or Faust.

:class:`Processor` decodes one input record with its contract, checks that
it is keyed by its ``request_id`` (the join relies on co-partitioning by that
key), runs the join transition on the state in a :class:`StateStore`, and
says what to produce. Bad input is data, not an exception: it comes back as a
:class:`~schemas.DeadLetter` that keeps the raw bytes and where they came
from, and processing goes on. The only exception is a join state that cannot
be read back, a bug or a bad upgrade, which must stop the worker loudly.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import ValidationError

from pipeline.stream import join
from pipeline.stream.metrics import Metrics
from schemas import DeadLetter, EMLabel, ErrorKind, InferenceEvent, Outcome, UserFeedback

Source = Literal["inference-events", "em-labels", "user-feedback"]
INPUTS: tuple[Source, ...] = ("inference-events", "em-labels", "user-feedback")
"""The logical names of the three co-partitioned join inputs."""

_CONTRACTS: dict[Source, type[InferenceEvent] | type[EMLabel] | type[UserFeedback]] = {
    "inference-events": InferenceEvent,
    "em-labels": EMLabel,
    "user-feedback": UserFeedback,
}
# JoinState serialises its fields in declaration order, so the two numbers a
# sweep needs sit at the front; reading them avoids parsing every event.
_HEADER = re.compile(rb'^\{"shard":(-?\d+),"first_seen":([0-9.eE+-]+),')


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed input record, as the transport handed it over."""

    source: Source
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class StateStore(Protocol):
    """Where join states live: a Faust table in the worker, a dict in tests."""

    def get(self, key: str) -> bytes | None:
        """The state of ``key``, or None."""

    def put(self, key: str, value: bytes) -> None:
        """Store a state while processing a record of the key's partition."""

    def delete(self, key: str, shard: int) -> None:
        """Remove a state outside record processing; ``shard`` is its partition."""

    def forget(self, key: str) -> None:
        """Drop a local copy of a state this worker no longer owns (no changelog)."""

    def items(self) -> Iterable[tuple[str, bytes]]:
        """Every state held locally."""


class DictStore:
    """A :class:`StateStore` over a plain dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        """The state of ``key``, or None."""
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        """Store a state."""
        self.data[key] = value

    def delete(self, key: str, shard: int) -> None:
        """Remove a state."""
        self.data.pop(key, None)

    def forget(self, key: str) -> None:
        """Remove a state."""
        self.data.pop(key, None)

    def items(self) -> Iterable[tuple[str, bytes]]:
        """A snapshot of every state."""
        return list(self.data.items())


class RejectedError(Exception):
    """A record that breaks its contract (carried to the dead-letter topic, never raised out)."""

    def __init__(self, error: str, *, kind: ErrorKind) -> None:
        super().__init__(error)
        self.kind: ErrorKind = kind
        self.error = error


def decode(record: Record) -> InferenceEvent | EMLabel | UserFeedback:
    """Parse and validate a record against its topic's contract and key.

    Raises:
        RejectedError: ``decode`` when the bytes are not JSON, ``validate`` when
            the message breaks its contract or is not keyed by its request_id.
    """
    if record.value is None:
        msg = "the record has no value (a tombstone on an input topic)"
        raise RejectedError(msg, kind="decode")
    try:
        message = _CONTRACTS[record.source].from_bytes(record.value)
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
class Result:
    """What to produce for one record: an outcome, a dead letter, or nothing."""

    outcome: Outcome | None = None
    dead_letter: DeadLetter | None = None


class Processor:
    """The join over a state store, with its counters."""

    def __init__(self, store: StateStore, worker_id: str, metrics: Metrics | None = None) -> None:
        self.store = store
        self.worker_id = worker_id
        self.metrics = metrics or Metrics()

    def process(self, record: Record, now: datetime) -> Result:
        """Handle one input record."""
        self.metrics.inc("stream_records_total", topic=record.source)
        try:
            message = decode(record)
        except RejectedError as exc:
            self.metrics.inc("stream_dead_letters_total", topic=record.source, kind=exc.kind)
            return Result(dead_letter=self._dead_letter(record, exc, now))
        key = message.request_id
        raw = self.store.get(key)
        state = join.JoinState.from_bytes(raw) if raw is not None else None
        shard = record.partition
        if isinstance(message, InferenceEvent):
            step = join.on_event(state, message, shard=shard, now=now)
        elif isinstance(message, EMLabel):
            step = join.on_label(state, message, shard=shard, now=now)
        else:
            step = join.on_feedback(state, message, shard=shard, now=now)
        self.metrics.inc("stream_join_steps_total", input=record.source, result=step.kind)
        if step.changed:
            self.store.put(key, step.state.to_bytes())  # a new value: Faust logs it
        if step.outcome is not None:
            self.metrics.inc("stream_outcomes_total", reason="joined")
        return Result(outcome=step.outcome)

    def _dead_letter(self, record: Record, exc: RejectedError, now: datetime) -> DeadLetter:
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
    ) -> Iterator[Outcome]:
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
                continue
            if first_seen > deadline:
                held += 1
                continue
            expiry = join.expire(join.JoinState.from_bytes(raw), now, window_s)
            if expiry.kind == "open":  # only if the header and the body disagree
                held += 1
                continue
            self.store.delete(key, shard)
            if expiry.kind in {"orphan_label", "orphan_feedback"}:
                self.metrics.inc("stream_orphans_total", kind=expiry.kind)
            if expiry.outcome is not None:
                self.metrics.inc("stream_outcomes_total", reason="unlabeled")
                yield expiry.outcome
        self.metrics.set("stream_join_entries", held)


def _parse_header(raw: bytes) -> tuple[int, float]:
    state = join.JoinState.from_bytes(raw)
    return state.shard, state.first_seen
