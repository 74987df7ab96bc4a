"""Write one batch of Kafka records to ClickHouse, idempotently.

A batch is decoded once into rows per table (:meth:`ClickHouseWriter.prepare`)
and those rows are kept on the batch, so a retry inserts exactly what the
first attempt tried. Every insert carries an ``insert_deduplication_token``
derived from the batch's topic/partition/offset ranges and the table, so an
insert that succeeded before a timeout is dropped by the server on retry.

Outcomes are checked against the table first: a ``(request_id, version)``
already present (a replay after a crash between insert and offset commit) or
older than what is present is skipped. ``trajectory_points`` is inserted
before ``outcomes``, so an outcome present means its points are too.

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
from typing import Any, TypeVar

from pydantic import ValidationError

from pipeline.errors import WarehouseError
from pipeline.stream.errors import SinkError
from pipeline.stream.metrics import Metrics
from pipeline.warehouse import rows
from pipeline.warehouse.errors import WarehouseUnreachableError
from schemas import DeadLetter, InferenceEvent, Outcome, UserFeedback

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


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One consumed record of a sink topic."""

    source: str
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class Prepared:
    """A batch as rows per table, in insert order."""

    tables: list[tuple[str, tuple[str, ...], list[list[Any]]]]
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class Batch:
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


_M = TypeVar("_M", InferenceEvent, UserFeedback, DeadLetter, Outcome)


def _decode(kind: type[_M], rec: SinkRecord, skipped: Counter[str]) -> _M | None:
    try:
        return kind.from_bytes(rec.value or b"")
    except ValidationError:
        # Only the joiner dead-letters input; here it is counted and left out.
        skipped[f"invalid {rec.source}"] += 1
        return None


class ClickHouseWriter:
    """Inserts batches through one lazily opened clickhouse-connect client."""

    def __init__(self, connect: Callable[[], Any], metrics: Metrics | None = None) -> None:
        self._connect = connect
        self._client: Any = None
        self.metrics = metrics or Metrics()

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                self._client = self._connect()
            except Exception as exc:
                raise classify(exc, "connecting") from exc
        return self._client

    def close(self) -> None:
        """Close the client, if open."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def write(self, batch: Batch) -> dict[str, int]:
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
            settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token}
            try:
                client.insert(table, values, column_names=columns, settings=settings)
            except Exception as exc:
                raise classify(exc, f"the insert into {table}") from exc
            written[table] = len(values)
        return written

    def prepare(self, client: Any, batch: Batch) -> Prepared:
        """Decode the batch into rows; outcomes already in the table are left out."""
        skipped: Counter[str] = Counter()
        events: list[list[Any]] = []
        feedback: list[list[Any]] = []
        letters: list[list[Any]] = []
        outcomes: list[tuple[Outcome, SinkRecord]] = []
        for rec in batch.records:
            if rec.source == "inference-events":
                if event := _decode(InferenceEvent, rec, skipped):
                    _, row = rows.inference_event_row(event, rec.topic, rec.partition, rec.offset)
                    events.append(row)
            elif rec.source == "user-feedback":
                if fb := _decode(UserFeedback, rec, skipped):
                    feedback.append(rows.feedback_row(fb, rec.topic, rec.partition, rec.offset))
            elif rec.source == "dead-letters":
                if letter := _decode(DeadLetter, rec, skipped):
                    letters.append(rows.dead_letter_row(letter))
            elif outcome := _decode(Outcome, rec, skipped):
                outcomes.append((outcome, rec))
        fresh = self._fresh(client, outcomes, skipped)
        points = [row for outcome, _, _ in fresh for row in rows.trajectory_rows(outcome)]
        outcome_rows = [
            rows.outcome_row(o, r.topic, r.partition, r.offset, prev) for o, r, prev in fresh
        ]
        return Prepared(
            [
                ("inference_events", rows.INFERENCE_EVENT_COLUMNS, events),
                ("user_feedback", rows.FEEDBACK_COLUMNS, feedback),
                ("dead_letters", rows.DEAD_LETTER_COLUMNS, letters),
                ("trajectory_points", rows.TRAJECTORY_COLUMNS, points),
                ("outcomes", rows.OUTCOME_COLUMNS, outcome_rows),
            ],
            skipped,
        )

    def _fresh(
        self, client: Any, outcomes: list[tuple[Outcome, SinkRecord]], skipped: Counter[str]
    ) -> list[tuple[Outcome, SinkRecord, rows.Contribution]]:
        """The outcomes newer than what the table holds, each with what it replaces."""
        if not outcomes:
            return []
        ids = sorted({outcome.request_id for outcome, _ in outcomes})
        try:
            found = client.query(_EXISTING, parameters={"ids": ids}).result_rows
        except Exception as exc:
            raise classify(exc, "the lookup of existing outcomes") from exc
        latest: dict[str, rows.Contribution] = {str(rid): tuple(c) for rid, c in found}
        fresh: list[tuple[Outcome, SinkRecord, rows.Contribution]] = []
        for outcome, rec in outcomes:
            prev = latest.get(outcome.request_id, rows.NO_PREVIOUS)
            if outcome.version <= prev[0]:
                skipped["outcome already written"] += 1
                continue
            latest[outcome.request_id] = rows.contribution(outcome)
            fresh.append((outcome, rec, prev))
        return fresh
