"""The emitter delivers to the real broker, keyed by request id, exactly the events emitted."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.config import Settings
from pipeline.node import Emitter, EmitterSettings
from schemas import InferenceEvent
from schemas.examples import inference_event

pytestmark = pytest.mark.integration


def test_emitted_events_arrive_keyed_by_request_id(isolated: Settings) -> None:
    template = inference_event()
    events = [
        template.model_copy(update={"request_id": f"req-{i}", "event_id": f"evt-{i}"})
        for i in range(200)
    ]
    with Emitter(isolated.kafka, EmitterSettings(linger_ms=1)) as emitter:
        assert all(emitter.emit(e) for e in events)
    stats = emitter.stats()
    assert (stats.sent, stats.failed, stats.dropped, stats.queued) == (200, 0, 0, 0)

    topic = isolated.topic("inference-events")
    consumer = Consumer({**isolated.kafka.client_config(), "group.id": f"check-{uuid.uuid4().hex}"})
    got: dict[str, InferenceEvent] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 30
        while len(got) < len(events) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            event = InferenceEvent.from_bytes(msg.value() or b"")
            assert msg.key() == event.request_id.encode()
            got[event.event_id] = event
    finally:
        consumer.close()
    assert got == {e.event_id: e for e in events}
