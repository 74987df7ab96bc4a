"""The real stream worker as bench_stream.py drives it: the joiner alone, then the sink alone.

The joiner runs without its sink over the workload's input topics; the sink
then runs alone over what the joiner produced, beside bare clickhouse-connect
inserts of the same rows in the same batches.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, NamedTuple

from _common import rate

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.runner import gc_threshold


def run_joiner(settings: Settings, total: int, **update: Any) -> tuple[float, float]:
    """Input records/s and outcomes/s of the worker without its sink."""
    from pipeline.stream.runner import Worker

    stream = StreamSettings(app_id=f"joiner-{uuid.uuid4().hex[:6]}", sink_enabled=False, **update)
    worker = Worker(settings, stream)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    records = rate(lambda: worker.metrics.total("stream_records_total"), total, 600)
    stop.set()
    thread.join(60)
    if records is None:
        msg = "the joiner did not get through its input in time"
        raise SystemExit(msg)
    return records, records * worker.metrics.total("stream_outcomes_total") / total


class SinkRun(NamedTuple):
    """One run of :func:`sink_vs_bare`."""

    sink: float
    """Rows/s of the sink."""
    bare: float
    """Rows/s of bare ``client.insert`` calls."""
    bare_reused: float
    """Rows/s of bare inserts through reused insert contexts."""
    rows: int
    """Rows each of them wrote."""
    decode_s: float
    """Seconds the decode of the records alone took (``writer.prepare``)."""
    records: int
    """Records the sink read."""


def sink_vs_bare(settings: Settings, batch_rows: int) -> SinkRun:
    """The sink against bare inserts of the same rows in the same batches.

    All of it (the decode timing, the sink, both bare inserts) runs under the
    worker's garbage-collector setting (``gc_gen0_threshold``), which the
    worker process applies to its sink thread too: at CPython's default the
    collections the sink's allocations trigger, over the records and rows
    this benchmark holds in memory, cost more than the decode itself.
    """
    with gc_threshold(StreamSettings().gc_gen0_threshold):
        return _sink_vs_bare(settings, batch_rows)


def _sink_vs_bare(settings: Settings, batch_rows: int) -> SinkRun:
    from clickhouse_connect.driver import options
    from confluent_kafka import Consumer

    from pipeline.stream.metrics import Metrics
    from pipeline.stream.sink import Sink
    from pipeline.stream.writer import SINK_TOPICS, ClickHouseWriter, SinkBatch, SinkRecord
    from pipeline.warehouse.client import connect

    by_topic = {settings.topic(name): name for name in SINK_TOPICS}
    conf = {**settings.kafka.client_config(), "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}  # fmt: skip
    consumer = Consumer(conf)
    consumer.subscribe(list(by_topic))
    records: list[SinkRecord] = []
    quiet = time.monotonic()
    while time.monotonic() - quiet < 3:  # read until nothing came for 3 s
        for m in consumer.consume(10_000, 0.5):
            if m.error() is None:
                records.append(SinkRecord(by_topic[m.topic()], m.topic(), m.partition(),
                                          m.offset(), m.value(), m.key()))  # fmt: skip
                quiet = time.monotonic()
    consumer.close()
    client = connect(settings)
    client.query("SELECT 1").result_rows  # noqa: B018  # connect before timing
    getattr(options, "pd", None)  # clickhouse-connect imports pandas at its first insert
    writer = ClickHouseWriter(lambda: client)
    chunks = [SinkBatch(records[i : i + batch_rows]) for i in range(0, len(records), batch_rows)]
    start = time.perf_counter()
    prepared = [writer.prepare(client, chunk) for chunk in chunks]  # before the sink writes
    decode_s = time.perf_counter() - start
    expected = sum(len(values) for p in prepared for _, _, values in p.tables)

    metrics = Metrics()
    stream = StreamSettings(app_id=f"sink-{uuid.uuid4().hex[:6]}", sink_batch_rows=batch_rows)
    sink = Sink(settings, stream, ClickHouseWriter(lambda: connect(settings), metrics), metrics)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()

    def written() -> float:
        # Drained: stop, so the last batch is written now, not when it is old enough.
        if metrics.total("sink_records_total") >= len(records):
            stop.set()
        return metrics.total("sink_rows_total")

    rows = rate(written, expected, 600)
    stop.set()
    thread.join(60)
    if rows is None:
        msg = "the sink did not write its rows in time"
        raise SystemExit(msg)

    start = time.perf_counter()
    for p in prepared:
        for table, columns, values in p.tables:
            if values:
                client.insert(table, values, column_names=columns)
    bare = expected / (time.perf_counter() - start)
    contexts: dict[str, Any] = {}
    start = time.perf_counter()
    for p in prepared:
        for table, columns, values in p.tables:
            if values:
                if table not in contexts:
                    contexts[table] = client.create_insert_context(table, column_names=columns)
                client.insert(data=values, context=contexts[table])
    reused = expected / (time.perf_counter() - start)
    client.close()
    return SinkRun(rows, bare, reused, expected, decode_s, len(records))
