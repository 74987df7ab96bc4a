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

Errors are sorted (:mod:`pipeline.stream.refusal`): :class:`TransientWriteError`
(server down, slow, busy) is retried by the sink as it is. An insert refused
for something in its rows is split in halves until each refused row stands
alone; the other rows are written, each range under a token of its own (the
ranges tried depend only on which rows are refused, so a replay's tokens
match), and each refused row's record is dead-lettered to the dead-letters
topic with ClickHouse's reason (``error_kind="warehouse_refused"``) before the
batch counts as written. A record refused in one table has no rows in the
tables written after it (an outcome's points go first, so an outcome present
still means its points are). :class:`~pipeline.stream.errors.SinkError` (a
table or column missing, credentials refused, or every row of an insert
refused: the table, not the rows) stops the worker, since retrying cannot help
and skipping would lose data.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from pipeline.errors import WarehouseError
from pipeline.stream.errors import SinkError
from pipeline.stream.metrics import Metrics
from pipeline.stream.outcome_rows import OutcomeRows, outcome_rows
from pipeline.stream.refusal import RowsRefusedError, isolate, reason, verdict
from pipeline.warehouse import rows
from schemas import DeadLetter, ErrorKind, InferenceEvent, Outcome, UserFeedback

log = logging.getLogger(__name__)

SINK_TOPICS = ("inference-events", "user-feedback", "dead-letters", "outcomes")
"""Logical topics the sink writes to ClickHouse."""

_INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}
_EXISTING = (
    f"SELECT request_id, argMax({rows.CONTRIBUTION_SQL}, version) FROM outcomes "  # noqa: S608  # a constant expression
    "WHERE request_id IN %(ids)s GROUP BY request_id"
)


class TransientWriteError(Exception):
    """ClickHouse could not take the batch now; the sink retries it as it is."""


DeadLetterSend = Callable[[Sequence[DeadLetter]], None]
"""Produces dead letters and waits for their acks; raises TransientWriteError if not acked."""


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
    sources: dict[str, list[int]] = field(default_factory=dict)
    """Per table, the index in the batch's records of the record each row comes from."""


@dataclass
class SinkBatch:
    """Records written together and committed together."""

    records: list[SinkRecord] = field(default_factory=list)
    prepared: Prepared | None = None
    refused: dict[int, str] = field(default_factory=dict)
    """Records whose rows ClickHouse refused (index in ``records``), with the reason."""

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

    def token(self, table: str, digest: str | None = None, span: str = "") -> str:
        """The deduplication token of this batch's insert into ``table`` (of a row range)."""
        return f"{table}:{digest or self.digest()}{span}"


def classify(exc: BaseException, what: str, *, insert: bool = False) -> Exception:
    """Turn a client exception into a retryable, a row-level (inserts only) or a fatal error."""
    kind = verdict(exc)
    if kind == "retry":
        return TransientWriteError(f"{what}: {exc}")
    if kind == "rows" and insert:
        return RowsRefusedError(reason(exc))
    if isinstance(exc, WarehouseError):
        return SinkError(str(exc))
    return SinkError(f"ClickHouse refused {what}: {reason(exc)}; fix the table or the settings")


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
        dead_letters: DeadLetterSend | None = None,
    ) -> None:
        self._connect = connect
        self.dead_letters = dead_letters
        """Where refused rows' records go (the sink sets its producer when None)."""
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
        """Insert the batch, setting its refused rows apart; return rows written per table.

        Raises:
            TransientWriteError: retry the same batch later (nothing is lost:
                every range is written under its own deduplication token).
            SinkError: ClickHouse will never accept it: the table, not the rows.
        """
        client = self._get_client()
        if batch.prepared is None:
            batch.prepared = self.prepare(client, batch)
        written: dict[str, int] = {}
        digest = batch.digest()
        batch.refused = {}
        for table, columns, values in batch.prepared.tables:
            sources = batch.prepared.sources[table]
            keep = [i for i, src in enumerate(sources) if src not in batch.refused]
            rows_ = values if len(keep) == len(values) else [values[i] for i in keep]
            if not rows_:
                continue

            def insert(lo: int, hi: int, table: str = table, columns: tuple[str, ...] = columns,
                       rows_: list[list[Any]] = rows_) -> None:  # fmt: skip
                span = "" if (lo, hi) == (0, len(rows_)) else f":{lo}-{hi}"
                try:
                    self._insert(
                        client, table, columns, rows_[lo:hi], batch.token(table, digest, span)
                    )
                except Exception as exc:
                    self._contexts.pop(table, None)  # a failed context may hold its data
                    raise classify(exc, f"the insert into {table}", insert=True) from exc

            refused = isolate(len(rows_), insert)
            if refused and len(refused) == len(rows_) > 1:
                msg = (
                    f"ClickHouse refused every row of the insert into {table} "
                    f"({refused[0][1]}): the table, not the rows; fix it, then restart"
                )
                raise SinkError(msg)
            for i, why in refused:
                batch.refused.setdefault(sources[keep[i]], f"the row for {table}: {why}")
            if len(refused) < len(rows_):
                written[table] = len(rows_) - len(refused)
        if batch.refused:
            self._dead_letter(batch)
        return written

    def _dead_letter(self, batch: SinkBatch) -> None:
        """Send each refused record to the dead-letters topic (a dead letter's own row: logged)."""
        letters: list[DeadLetter] = []
        for index, why in sorted(batch.refused.items()):
            rec = batch.records[index]
            log.warning(
                "ClickHouse refused %s/%d@%d: %s", rec.topic, rec.partition, rec.offset, why
            )
            if rec.source == "dead-letters":
                self.metrics.inc("sink_skipped_total", reason="refused dead letters")
                continue  # a dead letter of a dead letter could be refused again, forever
            letters.append(DeadLetter.capture(
                source_topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
                raw=rec.value or b"", error=f"ClickHouse refused {why}",
                error_kind="warehouse_refused", ts=self.clock(), worker_id=self.worker_id,
            ))  # fmt: skip
        if not letters:
            return
        if self.dead_letters is None:
            msg = f"ClickHouse refused {len(letters)} rows and the writer has no dead-letter topic"
            raise SinkError(msg)
        self.dead_letters(letters)
        self.metrics.inc("sink_refused_total", len(letters))

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
        outcomes: list[tuple[int, OutcomeRows]] = []
        src: dict[str, list[int]] = {"events": [], "feedback": [], "letters": []}
        for index, rec in enumerate(batch.records):
            if rec.source == "outcomes":
                parts = outcome_rows(rec.value or b"", rec.topic, rec.partition, rec.offset)
                if parts is None:
                    parts = self._checked_outcome(rec, skipped, letters, index, src["letters"])
                if parts is not None:
                    outcomes.append((index, parts))
            elif rec.source == "inference-events":
                if event := _decode(InferenceEvent, rec, skipped):
                    _, row = rows.inference_event_row(event, rec.topic, rec.partition, rec.offset)
                    events.append(row)
                    src["events"].append(index)
            elif rec.source == "user-feedback":
                if fb := _decode(UserFeedback, rec, skipped):
                    feedback.append(rows.feedback_row(fb, rec.topic, rec.partition, rec.offset))
                    src["feedback"].append(index)
            elif letter := _decode(DeadLetter, rec, skipped):
                letters.append(rows.dead_letter_row(letter))
                src["letters"].append(index)
        fresh = self._fresh(client, outcomes, skipped)
        points = [row for _, parts, _ in fresh for row in parts.points]
        outcome_rows_ = [[*parts.row, prev] for _, parts, prev in fresh]
        return Prepared(
            [
                ("inference_events", rows.INFERENCE_EVENT_COLUMNS, events),
                ("user_feedback", rows.FEEDBACK_COLUMNS, feedback),
                ("dead_letters", rows.DEAD_LETTER_COLUMNS, letters),
                ("trajectory_points", rows.TRAJECTORY_COLUMNS, points),
                ("outcomes", rows.OUTCOME_COLUMNS, outcome_rows_),
            ],
            skipped,
            {
                "inference_events": src["events"],
                "user_feedback": src["feedback"],
                "dead_letters": src["letters"],
                "trajectory_points": [i for i, parts, _ in fresh for _ in parts.points],
                "outcomes": [i for i, _, _ in fresh],
            },
        )

    def _checked_outcome(
        self,
        rec: SinkRecord,
        skipped: Counter[str],
        letters: list[list[Any]],
        index: int,
        sources: list[int],
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
            sources.append(index)
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
        self, client: Any, outcomes: list[tuple[int, OutcomeRows]], skipped: Counter[str]
    ) -> list[tuple[int, OutcomeRows, rows.Contribution]]:
        """The outcomes newer than what the table holds, each with what it replaces."""
        if not outcomes:
            return []
        ids = sorted({parts.request_id for _, parts in outcomes})
        try:
            found = client.query(_EXISTING, parameters={"ids": ids}).result_rows
        except Exception as exc:
            raise classify(exc, "the lookup of existing outcomes") from exc
        latest: dict[str, rows.Contribution] = {str(rid): tuple(c) for rid, c in found}
        fresh: list[tuple[int, OutcomeRows, rows.Contribution]] = []
        for index, parts in outcomes:
            prev = latest.get(parts.request_id, rows.NO_PREVIOUS)
            if parts.version <= prev[0]:
                skipped["outcome already written"] += 1
                continue
            latest[parts.request_id] = parts.contribution
            fresh.append((index, parts, prev))
        return fresh
