"""The ClickHouse sink: consume, batch, insert, and only then commit.

A plain confluent-kafka consumer in its own thread and consumer group, so it
owns its commits (Faust commits whenever its agents move on, which cannot
wait for an insert). Records of the sink topics are buffered and written as
one batch when ``sink_batch_rows`` are buffered or the oldest is
``sink_batch_max_s`` old. Offsets are committed synchronously after the
batch is in ClickHouse.

Pipelined: a batch is decoded and inserted by a writer thread while the
consumer thread reads the next one, so Kafka fetches and ClickHouse's own
work overlap the sink's Python work (the sink was consume + decode + insert
in series before; see BENCHMARKS.md). At most one batch is in flight; its
offsets are committed by the consumer thread once the writer is done, so
commits stay in order.

Backpressure: when ClickHouse is slow or down the writer keeps the batch and
retries with exponential backoff; the consumer thread waits for it with its
partitions paused (it still polls, so the group keeps it as a member).
Nothing is skipped: Kafka holds what has not been written, and the joiner
upstream keeps going. A row ClickHouse refuses for its content is set apart
by the writer and its record dead-lettered (:mod:`pipeline.stream.outbox`);
the rest of its batch is written and committed. On a rebalance, the batch in flight and the buffered
records of revoked partitions are written if ClickHouse takes them at once,
else dropped uncommitted for the new owner to read again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.lag import LagGauges, Partition, lags
from pipeline.stream.metrics import Metrics
from pipeline.stream.outbox import DeadLetterProducer
from pipeline.stream.writer import (
    SINK_TOPICS,
    ClickHouseWriter,
    SinkBatch,
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
        self._outbox: DeadLetterProducer | None = None
        if writer.dead_letters is None:
            self._outbox = writer.dead_letters = DeadLetterProducer(settings)
        self._by_topic = {settings.topic(name): name for name in SINK_TOPICS}
        self._consumer: Any = None
        self._batch = SinkBatch()
        self._opened = 0.0
        self._carry: list[SinkRecord] = []
        self._paused = False
        self._lag = LagGauges(self.metrics, "sink", "sink_records_total")
        self._committed: dict[Partition, int] = {}
        self._next_lag = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-writer")
        self._inflight: tuple[SinkBatch, Future[dict[str, int] | None]] | None = None
        self._failing = threading.Event()
        """Set by the writer while ClickHouse refuses the batch in flight."""
        self._abandon = threading.Event()
        """Set to make the writer give up retrying (a rebalance, a stop out of time)."""
        self._stop = threading.Event()
        self._gave_up = False
        """True once a write was given up (a stop during an outage): write nothing more."""

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then write what is buffered and commit."""
        from confluent_kafka import Consumer

        self._stop = stop
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
                self._reap()
                room = self.stream.sink_batch_rows - len(self._batch.records)
                messages = self._consumer.consume(num_messages=max(room, 1), timeout=0.1)
                for message in messages:
                    self._add(message)
                if messages:
                    self.metrics.inc("sink_records_total", len(messages))
                    self.metrics.set("sink_buffered_records", len(self._batch.records))
                if self._due():
                    self._hand_over()
                if time.monotonic() >= self._next_lag:
                    self._measure_lag()
            self._await_inflight()
            if self._batch.records and not self._gave_up:
                self._hand_over()
                self._await_inflight()
        finally:
            self._abandon.set()
            self._pool.shutdown(wait=True)
            self._consumer.close()
            self.writer.close()
            if self._outbox is not None:
                self._outbox.close()

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
            message.key(),
        )
        if self._paused:
            # A partition assigned while paused is not paused: keep its records
            # for the next batch rather than grow the one waiting.
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

    def _hand_over(self) -> None:
        """Give the buffered batch to the writer (after the one in flight is done)."""
        self._await_inflight()
        batch = self._batch
        if not batch.records:
            return
        self._abandon.clear()
        self._inflight = (batch, self._pool.submit(self._write, batch))
        self._batch = SinkBatch(records=self._carry)
        self._carry = []
        self._opened = time.monotonic()
        self.metrics.set("sink_buffered_records", len(self._batch.records))

    def _await_inflight(self) -> None:
        """Wait for the batch in flight, polling (paused) while ClickHouse refuses it."""
        while self._inflight is not None:
            _, future = self._inflight
            if self._failing.is_set():
                self._pause(True)
            if self._paused:
                # Polling keeps the group membership alive and serves rebalances.
                message = self._consumer.poll(0.1)
                if message is not None:
                    self._add(message)
                    self.metrics.inc("sink_records_total")
            else:
                wait([future], timeout=0.1)
            self._reap()
        self._pause(False)

    def _reap(self) -> None:
        """Commit the batch in flight if the writer is done with it; re-raise what it raised."""
        if self._inflight is None or not self._inflight[1].done():
            return
        batch, future = self._inflight
        self._inflight = None
        written = future.result()  # a SinkError stops the sink here
        if written is None:
            self._gave_up = self._stop.is_set()
        elif batch.records:
            self._commit(batch, written)

    def _write(self, batch: SinkBatch) -> dict[str, int] | None:
        """Write with backoff until it succeeds; None when abandoned or a stop runs out of time.

        Runs on the writer thread; touches nothing but the writer and the events.
        """
        delay = self.stream.sink_retry_initial_s
        stop_seen: float | None = None
        try:
            while not self._abandon.is_set():
                try:
                    return self.writer.write(batch)
                except TransientWriteError as exc:
                    self.metrics.inc("sink_retries_total")
                    if not self._failing.is_set():
                        log.warning("ClickHouse is not taking writes; pausing, retrying: %s", exc)
                        self._failing.set()
                if self._stop.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > self.stream.shutdown_timeout_s / 2:
                        log.error(
                            "stopping with %d records not written; their offsets are not "
                            "committed, so the next start reads them again",
                            len(batch.records),
                        )
                        return None
                self._abandon.wait(delay)
                delay = min(delay * 2, self.stream.sink_retry_max_s)
            return None
        finally:
            self._failing.clear()

    def _pause(self, on: bool) -> None:
        if on == self._paused:
            return
        assignment = self._consumer.assignment()
        if on:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
            self._batch.records.extend(self._carry)
            self._carry = []
            log.info("ClickHouse takes writes again; resumed")
        self._paused = on
        self.metrics.set("sink_paused", 1 if on else 0)

    def _commit(self, batch: SinkBatch, written: dict[str, int]) -> None:
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
        else:
            self._committed.update({(tp.topic, tp.partition): tp.offset for tp in offsets})
        for table, count in written.items():
            self.metrics.inc("sink_rows_total", count, table=table)
        if batch.prepared is not None:
            for reason, count in batch.prepared.skipped.items():
                self.metrics.inc("sink_skipped_total", count, reason=reason)
        self.metrics.inc("sink_batches_total")

    def _measure_lag(self) -> None:
        """Publish lag per owned partition: the cached high watermark - the committed offset.

        The high watermark is the one the last fetch brought (no broker call); a
        partition's committed offset is asked for once, then tracked as committed.
        """
        from confluent_kafka import KafkaException

        self._next_lag = time.monotonic() + self.stream.lag_interval_s
        try:
            assignment = self._consumer.assignment()
            missing = [tp for tp in assignment if (tp.topic, tp.partition) not in self._committed]
            if missing:
                for tp in self._consumer.committed(missing, timeout=2.0):
                    self._committed[(tp.topic, tp.partition)] = tp.offset
            high = {
                (tp.topic, tp.partition): self._consumer.get_watermark_offsets(tp, cached=True)[1]
                for tp in assignment
            }
        except KafkaException as exc:
            log.debug("measuring the sink's lag failed: %s", exc)
            return
        self._lag.publish(lags(high, self._committed))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        for tp in revoked:
            self._committed.pop(tp, None)
        # The batch in flight: written and committed if ClickHouse takes it now,
        # else given back to the buffer (its records of revoked partitions dropped).
        if self._inflight is not None:
            if self._failing.is_set():
                self._abandon.set()
            batch, future = self._inflight
            wait([future])
            self._inflight = None
            written = future.result()
            if written is not None:
                self._commit(batch, written)
            else:
                self._batch.records[:0] = batch.records
                self._batch.prepared = None
        batch = self._batch
        if not self._paused and batch.records:
            try:
                self._commit(batch, self.writer.write(batch))
                self._batch = SinkBatch()
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
