"""What bench_stream.py measures the joiner against: a bare consumer and a counting Faust agent.

Both read the workload's input topics from the start and report input records/s
from the first record seen to the last. ``_floor`` is the target of the spawned
child process that hosts the Faust agent; it lives here, not in the script, so
the child imports only what it needs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
import time
import uuid
from typing import Any

from _common import rate

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.runner import gc_threshold

INPUTS = ("inference-events", "em-labels", "user-feedback")
"""The worker's input topics (without the prefix), which the workload fills."""


def raw_consume(settings: Settings, total: int) -> float:
    """Records/s of a bare confluent-kafka consumer reading the ``total`` input records."""
    from confluent_kafka import Consumer

    conf = {**settings.kafka.client_config(), "group.id": f"raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}  # fmt: skip
    consumer = Consumer(conf)
    consumer.subscribe([settings.topic(name) for name in INPUTS])
    got, first, start = 0, 0, 0.0
    while got < total:
        got += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
        if got and not first:
            first, start = got, time.perf_counter()
    took = time.perf_counter() - start
    consumer.close()
    return (total - first) / took


def faust_floor(settings: Settings, total: int, scheme: str, timeout_s: float) -> float | None:
    """Records/s of a Faust agent that only counts, or None if it saw none within the timeout.

    In a child process, killed at the end: an app that never got going (the
    confluent driver) keeps a thread spinning after its stop times out.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_floor, args=(settings, total, scheme, timeout_s, results))
    child.start()
    child.join(timeout_s + 60)
    if child.is_alive():
        child.kill()
    try:
        got: float | None = results.get(timeout=1)
    except queue.Empty:
        return None
    return got


def _floor(settings: Settings, total: int, scheme: str, timeout_s: float, results: Any) -> None:
    import faust

    seen = [0]
    stream = StreamSettings()
    app = faust.App(
        f"floor-{uuid.uuid4().hex[:8]}",
        broker=f"{scheme}://{settings.kafka.bootstrap_servers}",
        autodiscover=False, web_enabled=False, topic_disable_leader=True,
        consumer_auto_offset_reset="earliest", topic_partitions=6,
        stream_buffer_maxsize=max(4096, 2 * stream.batch_max_records),
    )  # fmt: skip
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}  # fmt: skip

    async def count(records: Any) -> None:
        async for _ in records.events():
            seen[0] += 1

    app.agent(app.topic(*[settings.topic(name) for name in INPUTS], **raw), name="count")(count)

    async def run() -> None:
        await app.start()
        await asyncio.Event().wait()  # until the process ends

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    with gc_threshold(stream.gc_gen0_threshold):
        thread.start()
        results.put(rate(lambda: seen[0], total, timeout_s))
    results.close()
    results.join_thread()
    os._exit(0)  # the app's threads are not ours to wait for
