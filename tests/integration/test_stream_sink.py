"""The ClickHouse sink against the real broker and warehouse, with ClickHouse failing on purpose."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.metrics import Metrics
from pipeline.stream.sink import Sink, sink_group
from pipeline.stream.writer import ClickHouseWriter, SinkBatch, SinkRecord, TransientWriteError
from pipeline.warehouse import rows
from pipeline.warehouse.client import connect
from schemas import Outcome
from schemas.examples import example_messages, inference_event

pytestmark = pytest.mark.integration

STREAM = StreamSettings(
    sink_batch_rows=50, sink_batch_max_s=0.2, sink_retry_initial_s=0.05, shutdown_timeout_s=4.0
)


class FlakyWriter(ClickHouseWriter):
    """The real writer, but ClickHouse "is down" while ``down`` is set or failures remain."""

    def __init__(self, settings: Settings, metrics: Metrics, failures: int = 0) -> None:
        super().__init__(lambda: connect(settings), metrics)
        self.failures = failures
        self.down = threading.Event()
        self.calls = 0

    def write(self, batch: SinkBatch) -> dict[str, int]:
        self.calls += 1
        if self.down.is_set() or self.failures > 0:
            self.failures -= 1
            msg = "ClickHouse is down (injected)"
            raise TransientWriteError(msg)
        return super().write(batch)


def outcomes(tag: str, n: int) -> list[Outcome]:
    made = []
    for i in range(n):
        rid = f"sink-{tag}-{i}"
        event = inference_event().model_copy(update={"request_id": rid, "event_id": f"e-{rid}"})
        made.append(
            Outcome(
                request_id=rid, event=event, labeled=False, version=1,
                joined_at=datetime.now(UTC),
            )
        )  # fmt: skip
    return made


def produce(settings: Settings, items: list[Outcome]) -> None:
    producer = Producer(settings.kafka.client_config())
    for item in items:
        producer.produce(
            settings.topic("outcomes"), key=item.request_id.encode(), value=item.to_bytes()
        )
    assert producer.flush(30) == 0


def count(settings: Settings, tag: str) -> int:
    client = connect(settings)
    try:
        sql = "SELECT count() FROM outcomes WHERE request_id LIKE %(p)s"
        return int(client.query(sql, parameters={"p": f"sink-{tag}-%"}).result_rows[0][0])
    finally:
        client.close()


def committed(settings: Settings) -> int:
    topic = settings.topic("outcomes")
    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": sink_group(settings, STREAM)}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def run_sink(settings: Settings, writer: ClickHouseWriter, metrics: Metrics) -> tuple:
    sink = Sink(settings, STREAM, writer, metrics)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            sink.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return stop, thread, errors


def wait_for(probe: object, timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {probe}")


def test_a_slow_clickhouse_pauses_the_sink_and_nothing_is_lost(isolated: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    metrics = Metrics()
    writer = FlakyWriter(isolated, metrics, failures=5)
    stop, thread, errors = run_sink(isolated, writer, metrics)
    items = outcomes(tag, 120)
    produce(isolated, items)
    wait_for(lambda: metrics.get("sink_paused") == 1)
    wait_for(lambda: count(isolated, tag) == 120)
    stop.set()
    thread.join(30)
    assert errors == [] and not thread.is_alive()
    assert metrics.get("sink_retries_total") >= 5
    assert metrics.get("sink_paused") == 0
    assert committed(isolated) == 120  # every offset, and only after the rows were in


def test_stopping_during_an_outage_commits_nothing_and_a_restart_writes_it_all(
    isolated: Settings,
) -> None:
    tag = uuid.uuid4().hex[:8]
    metrics = Metrics()
    writer = FlakyWriter(isolated, metrics)
    writer.down.set()
    stop, thread, errors = run_sink(isolated, writer, metrics)
    produce(isolated, outcomes(tag, 40))
    wait_for(lambda: metrics.get("sink_retries_total") >= 3)
    stop.set()
    thread.join(30)
    assert errors == [] and not thread.is_alive()
    assert count(isolated, tag) == 0 and committed(isolated) == 0

    metrics = Metrics()
    stop, thread, errors = run_sink(isolated, FlakyWriter(isolated, metrics), metrics)
    wait_for(lambda: count(isolated, tag) == 40)
    stop.set()
    thread.join(30)
    assert errors == [] and committed(isolated) == 40


def test_the_stored_contribution_equals_the_one_computed_in_python(isolated: Settings) -> None:
    example = example_messages()["outcome"]
    assert isinstance(example, Outcome)
    rid = f"sink-contrib-{uuid.uuid4().hex[:8]}"
    event = example.event.model_copy(
        update={"request_id": rid, "ts": datetime(2024, 5, 1, 12, 7, 59, 999000, UTC)}
    )
    item = example.model_copy(update={"request_id": rid, "event": event})
    writer = ClickHouseWriter(lambda: connect(isolated))
    record = SinkRecord("outcomes", isolated.topic("outcomes"), 0, 0, item.to_bytes())
    assert writer.write(SinkBatch([record]))["outcomes"] == 1
    client = connect(isolated)
    try:
        sql = f"SELECT {rows.CONTRIBUTION_SQL} FROM outcomes WHERE request_id = %(r)s"  # noqa: S608  # a constant expression
        stored = client.query(sql, parameters={"r": rid}).result_rows[0][0]
    finally:
        client.close()
        writer.close()
    assert tuple(stored) == rows.contribution(item)
