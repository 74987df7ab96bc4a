"""Write one batch of Kafka records to ClickHouse, idempotently.

A batch is decoded once into rows per table (:meth:`ClickHouseWriter.prepare`)
and those rows are kept on the batch, so a retry inserts exactly what the
first attempt tried. Every insert carries an ``insert_deduplication_token``
derived from the batch's topic/partition/offset ranges and the table, so an
insert that succeeded before a timeout is dropped by the server on retry.

Outcomes come from the joiner, so their rows are built straight from their
JSON with a structural check (:mod:`pipeline.stream.outcome_rows`); only what
that check refuses is validated with the contract, and what the contract
refuses is dead-lettered into the ``dead_letters`` table with the reason, in
the same batch (ADR 004). Input topics (events, feedback) are validated with
their contracts; the joiner dead-letters their bad records, so here those are
only counted.

Outcomes are checked against the table first: a ``(request_id, version)``
already present (a replay after a crash between insert and offset commit) or
older than what is present is skipped. ``trajectory_points`` is inserted
before ``outcomes``, so an outcome present means its points are too.

Inserts reuse one clickhouse-connect insert context per table, which saves
the ``DESCRIBE TABLE`` round trip ``client.insert`` makes every time.

Errors are sorted: :class:`TransientWriteError` (server down, slow, busy) is
retried by the sink; :class:`~pipeline.stream.errors.SinkError` (the server
refuses the data or the credentials) stops the worker, since retrying cannot
help and skipping would lose data.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from pipeline.errors import WarehouseError
from pipeline.stream.errors import SinkError
from pipeline.stream.metrics import Metrics
from pipeline.stream.outcome_rows import OutcomeRows, outcome_rows
from pipeline.warehouse import rows
from pipeline.warehouse.errors import WarehouseUnreachableError
from schemas import DeadLetter, ErrorKind, InferenceEvent, Outcome, UserFeedback

log = logging.getLogger(__name__)

SINK_TOPICS = ("inference-events", "user-feedback", "dead-letters", "outcomes")
"""Logical topics the sink writes to ClickHouse."""

# Server codes that mean "this data or this user will never be accepted".
_PERMANENT_CODES = frozenset(
    {6, 16, 27, 33, 36, 41, 43, 47, 53, 62, 69, 70, 72, 117, 164, 321, 349, 516}
)
_INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}
_EXISTING = (
    f"SELECT request_id, argMax({rows.CONTRIBUTION_SQL}, version) FROM outcomes "  # noqa: S608  # a constant expression
    "WHERE request_id IN %(ids)s GROUP BY request_id"
)


class TransientWriteError(Exception):
    """ClickHouse could not take the batch now; the sink retries it as it is."""


class SinkRecord(NamedTuple):
    """One consumed record of a sink topic (a tuple: made once per record, cheaply)."""

    source: str
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


@dataclass
class Prepared:
    """A batch as rows per table, in insert order."""

    tables: list[tuple[str, tuple[str, ...], list[list[Any]]]]
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class SinkBatch:
    """Records written together and committed together."""

    records: list[SinkRecord] = field(default_factory=list)
    prepared: Prepared | None = None

    def ranges(self) -> dict[tuple[str, int], tuple[int, int]]:
        """First and last offset per topic partition."""
        spans: dict[tuple[str, int], tuple[int, int]] = {}
        for rec in self.records:
            first, last = spans.get((rec.topic, rec.partition), (rec.offset, rec.offset))
            spans[(rec.topic, rec.partition)] = (min(first, rec.offset), max(last, rec.offset))
        return spans

    def digest(self) -> str:
        """A digest of the batch's offset ranges: the same records, the same digest."""
        lines = sorted(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in self.ranges().items())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]

    def token(self, table: str, digest: str | None = None) -> str:
        """The deduplication token of this batch's insert into ``table``."""
        return f"{table}:{digest or self.digest()}"


def classify(exc: BaseException, what: str) -> Exception:
    """Turn a client exception into a retryable or a fatal error."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, WarehouseUnreachableError | OperationalError):
        return TransientWriteError(f"{what}: {exc}")
    if isinstance(exc, WarehouseError):
        return SinkError(str(exc))
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code not in _PERMANENT_CODES and type(exc) is DatabaseError:
            return TransientWriteError(f"{what}: {exc}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SinkError(f"ClickHouse refused {what}: {first}")


_M = TypeVar("_M", InferenceEvent, UserFeedback, DeadLetter)


def _decode(kind: type[_M], rec: SinkRecord, skipped: Counter[str]) -> _M | None:
    try:
        message = kind.from_bytes(rec.value or b"")
    except ValidationError:
        # Only the joiner dead-letters input; here it is counted and left out.
        skipped[f"invalid {rec.source}"] += 1
        return None
    if isinstance(message, InferenceEvent | UserFeedback) and (
        rec.key != message.request_id.encode()
    ):
        # The joiner dead-letters an input not keyed by its request_id; so does the sink.
        skipped[f"invalid {rec.source}"] += 1
        return None
    return message


class ClickHouseWriter:
    """Inserts batches through one lazily opened clickhouse-connect client."""

    def __init__(
        self,
        connect: Callable[[], Any],
        metrics: Metrics | None = None,
        *,
        worker_id: str = "sink",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._connect = connect
        self._client: Any = None
        self._contexts: dict[str, Any] = {}
        self.metrics = metrics or Metrics()
        self.worker_id = worker_id
        self.clock = clock

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                self._client = self._connect()
            except Exception as exc:
                raise classify(exc, "connecting") from exc
            self._contexts.clear()
        return self._client

    def close(self) -> None:
        """Close the client, if open."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._contexts.clear()

    def write(self, batch: SinkBatch) -> dict[str, int]:
        """Insert the batch; return rows per table.

        Raises:
            TransientWriteError: retry the same batch later.
            SinkError: ClickHouse will never accept it.
        """
        client = self._get_client()
        if batch.prepared is None:
            batch.prepared = self.prepare(client, batch)
        written: dict[str, int] = {}
        digest = batch.digest()
        for table, columns, values in batch.prepared.tables:
            if not values:
                continue
            token = batch.token(table, digest)
            try:
                self._insert(client, table, columns, values, token)
            except Exception as exc:
                self._contexts.pop(table, None)  # a failed context may hold its data
                raise classify(exc, f"the insert into {table}") from exc
            written[table] = len(values)
        return written

    def _insert(
        self, client: Any, table: str, columns: tuple[str, ...], values: list[list[Any]], token: str
    ) -> None:
        context = self._contexts.get(table)
        if context is None:
            context = client.create_insert_context(table, column_names=list(columns))
            self._contexts[table] = context
        context.settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token}
        context.data = values
        client.data_insert(context)

    def prepare(self, client: Any, batch: SinkBatch) -> Prepared:
        """Decode the batch into rows; outcomes already in the table are left out."""
        skipped: Counter[str] = Counter()
        events: list[list[Any]] = []
        feedback: list[list[Any]] = []
        letters: list[list[Any]] = []
        outcomes: list[OutcomeRows] = []
        for rec in batch.records:
            if rec.source == "outcomes":
                parts = outcome_rows(rec.value or b"", rec.topic, rec.partition, rec.offset)
                if parts is None:
                    parts = self._checked_outcome(rec, skipped, letters)
                if parts is not None:
                    outcomes.append(parts)
            elif rec.source == "inference-events":
                if event := _decode(InferenceEvent, rec, skipped):
                    _, row = rows.inference_event_row(event, rec.topic, rec.partition, rec.offset)
                    events.append(row)
            elif rec.source == "user-feedback":
                if fb := _decode(UserFeedback, rec, skipped):
                    feedback.append(rows.feedback_row(fb, rec.topic, rec.partition, rec.offset))
            elif letter := _decode(DeadLetter, rec, skipped):
                letters.append(rows.dead_letter_row(letter))
        fresh = self._fresh(client, outcomes, skipped)
        points = [row for parts, _ in fresh for row in parts.points]
        outcome_rows_ = [[*parts.row, prev] for parts, prev in fresh]
        return Prepared(
            [
                ("inference_events", rows.INFERENCE_EVENT_COLUMNS, events),
                ("user_feedback", rows.FEEDBACK_COLUMNS, feedback),
                ("dead_letters", rows.DEAD_LETTER_COLUMNS, letters),
                ("trajectory_points", rows.TRAJECTORY_COLUMNS, points),
                ("outcomes", rows.OUTCOME_COLUMNS, outcome_rows_),
            ],
            skipped,
        )

    def _checked_outcome(
        self, rec: SinkRecord, skipped: Counter[str], letters: list[list[Any]]
    ) -> OutcomeRows | None:
        """An outcome the fast path refused, validated with the contract; else a dead letter."""
        raw = rec.value or b""
        try:
            outcome = Outcome.from_bytes(raw)
        except ValidationError as exc:
            skipped["invalid outcomes"] += 1
            kind: ErrorKind = "decode" if exc.errors()[0]["type"] == "json_invalid" else "validate"
            log.warning(
                "outcome at %s/%d@%d breaks its contract", rec.topic, rec.partition, rec.offset
            )
            letter = DeadLetter.capture(
                source_topic=rec.topic, partition=rec.partition, offset=rec.offset,
                key=rec.key, raw=raw, error=str(exc), error_kind=kind, ts=self.clock(),
                worker_id=self.worker_id,
            )  # fmt: skip
            letters.append(rows.dead_letter_row(letter))
            return None
        row = rows.outcome_row(outcome, rec.topic, rec.partition, rec.offset)[:-1]
        return OutcomeRows(
            outcome.request_id,
            outcome.version,
            row,
            rows.trajectory_rows(outcome),
            rows.contribution(outcome),
        )

    def _fresh(
        self, client: Any, outcomes: list[OutcomeRows], skipped: Counter[str]
    ) -> list[tuple[OutcomeRows, rows.Contribution]]:
        """The outcomes newer than what the table holds, each with what it replaces."""
        if not outcomes:
            return []
        ids = sorted({parts.request_id for parts in outcomes})
        try:
            found = client.query(_EXISTING, parameters={"ids": ids}).result_rows
        except Exception as exc:
            raise classify(exc, "the lookup of existing outcomes") from exc
        latest: dict[str, rows.Contribution] = {str(rid): tuple(c) for rid, c in found}
        fresh: list[tuple[OutcomeRows, rows.Contribution]] = []
        for parts in outcomes:
            prev = latest.get(parts.request_id, rows.NO_PREVIOUS)
            if parts.version <= prev[0]:
                skipped["outcome already written"] += 1
                continue
            latest[parts.request_id] = parts.contribution
            fresh.append((parts, prev))
        return fresh
