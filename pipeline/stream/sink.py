"""The ClickHouse sink: consume, batch, insert, and only then commit.

A plain confluent-kafka consumer in its own thread and consumer group, so it
owns its commits (Faust commits whenever its agents move on, which cannot
wait for an insert). Records of the sink topics are buffered and written as
one batch when ``sink_batch_rows`` are buffered or the oldest is
``sink_batch_max_s`` old. Offsets are committed synchronously after the
batch is in ClickHouse.

Backpressure: when ClickHouse is slow or down the sink keeps the batch,
pauses its partitions (it still polls, so the group keeps it as a member) and
retries with exponential backoff. Nothing is skipped: Kafka holds what has
not been written, and the joiner upstream keeps going. On a rebalance,
buffered records of revoked partitions are written if ClickHouse takes them
at once, else dropped uncommitted for the new owner to read again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.metrics import Metrics
from pipeline.stream.writer import (
    SINK_TOPICS,
    Batch,
    ClickHouseWriter,
    SinkRecord,
    TransientWriteError,
)

log = logging.getLogger(__name__)


def sink_group(settings: Settings, stream: StreamSettings) -> str:
    """The sink's consumer group."""
    return f"{settings.topic(stream.app_id)}-sink"


class Sink:
    """Moves the sink topics into ClickHouse; run :meth:`run` in a thread."""

    def __init__(
        self,
        settings: Settings,
        stream: StreamSettings,
        writer: ClickHouseWriter,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.writer = writer
        self.metrics = metrics or Metrics()
        self._by_topic = {settings.topic(name): name for name in SINK_TOPICS}
        self._consumer: Any = None
        self._batch = Batch()
        self._opened = 0.0
        self._carry: list[SinkRecord] = []
        self._retrying = False

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then write what is buffered and commit."""
        from confluent_kafka import Consumer

        conf = {
            **self.settings.kafka.client_config(),
            "group.id": sink_group(self.settings, self.stream),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        self._consumer = Consumer(conf)
        self._consumer.subscribe(
            list(self._by_topic), on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        try:
            while not stop.is_set():
                room = self.stream.sink_batch_rows - len(self._batch.records)
                messages = self._consumer.consume(num_messages=max(room, 1), timeout=0.1)
                for message in messages:
                    self._add(message)
                if messages:
                    self.metrics.inc("sink_records_total", len(messages))
                    self.metrics.set("sink_buffered_records", len(self._batch.records))
                if self._due():
                    self._flush(stop)
            self._flush(stop)
        finally:
            self._consumer.close()
            self.writer.close()

    def _add(self, message: Any) -> None:
        from confluent_kafka import KafkaException

        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            log.warning("the sink's consumer reports: %s", error)
            return
        record = SinkRecord(
            self._by_topic[message.topic()],
            message.topic(),
            message.partition(),
            message.offset(),
            message.value(),
        )
        if self._retrying:
            # A partition assigned during a retry is not paused: keep its
            # records for the next batch rather than touch the one in flight.
            self._carry.append(record)
            return
        if not self._batch.records:
            self._opened = time.monotonic()
        self._batch.records.append(record)

    def _due(self) -> bool:
        size = len(self._batch.records)
        if size >= self.stream.sink_batch_rows:
            return True
        return size > 0 and time.monotonic() - self._opened >= self.stream.sink_batch_max_s

    def _flush(self, stop: threading.Event) -> None:
        batch = self._batch
        if not batch.records:
            return
        written = self._write(batch, stop)
        if written is None:
            return
        if batch.records:
            self._commit(batch, written)
        self._pause(False)
        self._batch = Batch(records=self._carry)
        self._carry = []
        self._opened = time.monotonic()
        self.metrics.set("sink_buffered_records", len(self._batch.records))

    def _write(self, batch: Batch, stop: threading.Event) -> dict[str, int] | None:
        """Write with backoff until it succeeds; None when a stop runs out of time."""
        delay = self.stream.sink_retry_initial_s
        stop_seen: float | None = None
        while batch.records:  # a rebalance may revoke everything meanwhile
            try:
                return self.writer.write(batch)
            except TransientWriteError as exc:
                self.metrics.inc("sink_retries_total")
                if not self._retrying:
                    log.warning("ClickHouse is not taking writes; pausing and retrying: %s", exc)
                    self._pause(True)
            if stop.is_set():
                stop_seen = stop_seen or time.monotonic()
                if time.monotonic() - stop_seen > self.stream.shutdown_timeout_s / 2:
                    log.error(
                        "stopping with %d records not written; their offsets are not "
                        "committed, so the next start reads them again",
                        len(batch.records),
                    )
                    return None
            self._wait(delay)
            delay = min(delay * 2, self.stream.sink_retry_max_s)
        return {}

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            # Polling keeps the group membership alive and serves rebalances.
            message = self._consumer.poll(min(0.1, max(deadline - time.monotonic(), 0)))
            if message is not None:
                self._add(message)
                self.metrics.inc("sink_records_total")

    def _pause(self, on: bool) -> None:
        if on == self._retrying:
            return
        assignment = self._consumer.assignment()
        if on:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
        self._retrying = on
        self.metrics.set("sink_paused", 1 if on else 0)
        if not on:
            log.info("ClickHouse takes writes again; resumed")

    def _commit(self, batch: Batch, written: dict[str, int]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [
            TopicPartition(topic, partition, last + 1)
            for (topic, partition), (_, last) in sorted(batch.ranges().items())
        ]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in; a replay of this range is deduplicated.
            log.warning("committing the sink's offsets failed: %s", exc)
        for table, count in written.items():
            self.metrics.inc("sink_rows_total", count, table=table)
        if batch.prepared is not None:
            for reason, count in batch.prepared.skipped.items():
                self.metrics.inc("sink_skipped_total", count, reason=reason)
        self.metrics.inc("sink_batches_total")

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        batch = self._batch
        if not self._retrying and batch.records:
            try:
                self._commit(batch, self.writer.write(batch))
                self._batch = Batch()
                return
            except TransientWriteError:
                log.warning("could not write before a rebalance; the new owner reads it again")
        kept = [r for r in batch.records if (r.topic, r.partition) not in revoked]
        if len(kept) != len(batch.records):
            batch.records[:] = kept
            batch.prepared = None  # its rows included the records just dropped
        self._carry = [r for r in self._carry if (r.topic, r.partition) not in revoked]


def start_sink(
    sink: Sink, stop: threading.Event, on_fatal: Callable[[BaseException], None]
) -> threading.Thread:
    """Run the sink in a daemon thread; any exception it raises goes to ``on_fatal``."""

    def target() -> None:
        try:
            sink.run(stop)
        except BaseException as exc:
            log.exception("the ClickHouse sink failed")
            on_fatal(exc)

    thread = threading.Thread(target=target, name="clickhouse-sink", daemon=True)
    thread.start()
    return thread
