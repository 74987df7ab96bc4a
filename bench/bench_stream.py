"""Benchmarks of the stream worker: the pure join, and the whole worker end to end.

    .venv/bin/python bench/bench_stream.py                    # pure join only
    .venv/bin/python bench/bench_stream.py --stack embedded   # + end to end on a private stack
    .venv/bin/python bench/bench_stream.py --stack env        # + end to end on PIPELINE_* settings

The pure part pushes records (event, label, feedback per request, shuffled,
10% duplicated) through the Processor on a dict store, states serialised as
they would be in the Faust table, and times an expiry sweep. End to end
produces the same records to Kafka, runs the worker (joiner and sink) in a
thread, and reports the time until every outcome is in ClickHouse.
"""

from __future__ import annotations

import argparse
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.processor import DictStore, Processor, Record, Source
from schemas import EMLabel, InferenceEvent, UserFeedback
from schemas.examples import inference_event

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def messages(n: int, tag: str) -> list[tuple[Source, InferenceEvent | EMLabel | UserFeedback]]:
    template = inference_event()
    out: list[tuple[Source, InferenceEvent | EMLabel | UserFeedback]] = []
    for i in range(n):
        rid = f"b-{tag}-{i}"
        event = template.model_copy(update={"request_id": rid, "event_id": f"e-{rid}"})
        label = EMLabel(
            label_id=f"l-{rid}", request_id=rid, labeler_id="a", ts=NOW, gold_answers=("Paris",)
        )
        fb = UserFeedback(feedback_id=f"f-{rid}", request_id=rid, ts=NOW, kind="thumbs", rating=1)
        out += [("inference-events", event), ("em-labels", label), ("user-feedback", fb)]
    rng = random.Random(7)  # noqa: S311  # a benchmark's shuffle, not a secret
    out += rng.sample(out, len(out) // 10)
    rng.shuffle(out)
    return out


def bench_pure(n: int) -> None:
    records = [
        Record(source, f"p.{source}", 0, i, m.request_id.encode(), m.to_bytes())
        for i, (source, m) in enumerate(messages(n, "pure"))
    ]
    processor = Processor(DictStore(), "bench")
    start = time.perf_counter()
    emitted = sum(processor.process(r, NOW).outcome is not None for r in records)
    took = time.perf_counter() - start
    print(f"pure join: {len(records)} records in {took:.2f} s = {len(records) / took:,.0f} rec/s")
    print(f"  {emitted} outcomes, {took / len(records) * 1e6:.1f} us per record")
    start = time.perf_counter()
    list(processor.expire(NOW, 3600.0))  # nothing due: the header fast path
    open_s = time.perf_counter() - start
    start = time.perf_counter()
    list(processor.expire(NOW + timedelta(hours=2), 3600.0))
    due_s = time.perf_counter() - start
    print(f"  sweep of {n} open entries {open_s * 1e3:.0f} ms; expiring them {due_s * 1e3:.0f} ms")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def stack(choice: str) -> Iterator[Settings]:
    if choice == "env":
        yield load_settings()
        return
    from pipeline.stack import manager

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            state_dir=Path(tmp),
            kafka={"bootstrap_servers": f"127.0.0.1:{closed_port()}"},
            clickhouse={"url": f"http://127.0.0.1:{closed_port()}"},
            mlflow={"tracking_uri": f"http://127.0.0.1:{closed_port()}"},
            embedded={"kafka_controller_port": closed_port(), "kafka_heap": "768m"},
        )
        manager.up(settings)
        try:
            yield settings
        finally:
            manager.down(settings)


def bench_end_to_end(base: Settings, n: int) -> None:
    from confluent_kafka import Producer

    from pipeline.stack.topics import ensure_topics
    from pipeline.stream.runner import Worker
    from pipeline.warehouse.client import connect

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})}
    )
    ensure_topics(settings)
    worker = Worker(settings, StreamSettings(commit_interval_s=0.5, sink_batch_max_s=0.5))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    if not worker.ready.wait(120):
        msg = "the worker did not start"
        raise SystemExit(msg)
    tag = uuid.uuid4().hex[:6]
    producer = Producer({**settings.kafka.client_config(), "linger.ms": 5})
    start = time.perf_counter()
    for source, message in messages(n, tag):
        producer.produce(settings.topic(source), key=message.request_id.encode(),
                         value=message.to_bytes())  # fmt: skip
        producer.poll(0)
    producer.flush(60)
    produced = time.perf_counter() - start
    client = connect(settings)
    sql = "SELECT count() FROM outcomes FINAL WHERE request_id LIKE %(p)s AND version = 3"
    while client.query(sql, parameters={"p": f"b-{tag}-%"}).result_rows[0][0] < n:
        if not thread.is_alive():
            msg = "the worker stopped"
            raise SystemExit(msg)
        time.sleep(0.2)
    took = time.perf_counter() - start
    stop.set()
    thread.join(60)
    client.close()
    records = worker.metrics.total("stream_records_total")
    print(f"end to end: {n} requests ({records:.0f} records) produced in {produced:.1f} s,")
    print(f"  all final outcomes in ClickHouse after {took:.1f} s = {records / took:,.0f} rec/s")
    print(f"  sink: {worker.metrics.total('sink_rows_total'):.0f} rows in "
          f"{worker.metrics.total('sink_batches_total'):.0f} batches")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--stack", choices=["none", "embedded", "env"], default="none")
    args = parser.parse_args()
    bench_pure(args.requests)
    if args.stack != "none":
        with stack(args.stack) as settings:
            bench_end_to_end(settings, args.requests)


if __name__ == "__main__":
    main()
