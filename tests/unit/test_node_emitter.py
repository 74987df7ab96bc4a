"""The emitter's local contract, with no broker listening (nothing is delivered).

librdkafka runs for real here; the address is a closed loopback port, so no
service is involved and nothing can arrive.
"""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.node import Emitter, EmitterClosedError, EmitterSettings
from pipeline.node.kafka import KafkaSettings
from schemas.examples import inference_event


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emitter(**settings: object) -> Emitter:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    return Emitter(kafka, EmitterSettings.model_validate(settings))


def test_a_full_buffer_drops_the_newest_and_counts_it() -> None:
    em = emitter(max_buffered_messages=5)
    event = inference_event()
    results = [em.emit(event) for _ in range(8)]
    assert results == [True] * 5 + [False] * 3
    stats = em.stats()
    assert (stats.dropped, stats.queued, stats.sent) == (3, 5, 0)
    closed = em.close(timeout=0.2)
    # Every accepted event ends as sent or failed: nothing vanishes on close.
    assert (closed.sent, closed.failed, closed.dropped, closed.queued) == (0, 5, 3, 0)


def test_emit_waits_at_most_its_budget_when_full() -> None:
    em = emitter(max_buffered_messages=1, full_wait_us=3000)
    payload = inference_event().to_bytes()
    assert em.emit_bytes("r1", payload)
    start = time.perf_counter()
    assert not em.emit_bytes("r2", payload)
    elapsed = time.perf_counter() - start
    em.close(timeout=0)
    assert 0.003 <= elapsed < 0.5


def test_emit_after_close_is_an_error_and_close_is_idempotent() -> None:
    em = emitter()
    em.close(timeout=0)
    assert em.close(timeout=0) == em.stats()
    with pytest.raises(EmitterClosedError):
        em.emit(inference_event())


def test_topic_gets_the_prefix() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_prefix="t1.")
    with Emitter(kafka, EmitterSettings(close_timeout_s=0)) as em:
        assert em.topic == "t1.inference-events"
