"""The Kafka clients we depend on work against the embedded broker's version.

Faust runs on aiokafka; the node SDK and tools use confluent-kafka. Kafka 4
removed old protocol versions, so both are exercised here against the real
broker rather than assumed.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pipeline.config import Settings

pytestmark = pytest.mark.integration


def test_aiokafka_produces_and_consumes_in_a_group(isolated: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = isolated.topic("outcomes")
    payloads = [f"m{i}".encode() for i in range(20)]

    async def roundtrip() -> list[bytes]:
        producer = AIOKafkaProducer(
            bootstrap_servers=isolated.kafka.bootstrap_servers, enable_idempotence=True
        )
        await producer.start()
        try:
            for i, value in enumerate(payloads):
                await producer.send_and_wait(topic, value, key=f"r{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=isolated.kafka.bootstrap_servers,
            group_id=f"g-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[bytes] = []
        try:
            async with asyncio.timeout(60):
                while len(got) < len(payloads):
                    batch = await consumer.getmany(timeout_ms=1000)
                    for records in batch.values():
                        got.extend(r.value for r in records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    assert sorted(asyncio.run(roundtrip())) == sorted(payloads)
