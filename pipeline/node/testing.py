"""Helpers for tests and demos: sign and publish control messages, read acks.

The real publisher (from the MLflow ``production`` alias) comes later; this is
the minimum to drive nodes against a real broker. Everything here blocks and
raises, which is right for a test and wrong for a serving path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    TopicPartition,
)

from pipeline.node.errors import NodeError
from pipeline.node.kafka import KafkaSettings, deliver, reliable_producer
from schemas import PolicyAck, PolicyBody, ThresholdUpdate
from schemas.signing import Ed25519PrivateKey


def signed_update(
    body: PolicyBody,
    *,
    version: int,
    key: bytes,
    key_id: str = "test-key",
    policy_name: str = "default",
    created_at: datetime | None = None,
) -> ThresholdUpdate:
    """An HMAC-signed update of ``body``."""
    return ThresholdUpdate.sign_hmac(
        policy_name=policy_name,
        version=version,
        created_at=created_at or datetime.now(UTC),
        body=body,
        key=key,
        signing_key_id=key_id,
    )


def ed25519_update(
    body: PolicyBody,
    *,
    version: int,
    private_key: Ed25519PrivateKey,
    key_id: str = "test-key",
    policy_name: str = "default",
    created_at: datetime | None = None,
) -> ThresholdUpdate:
    """An Ed25519-signed update of ``body``."""
    return ThresholdUpdate.sign_ed25519(
        policy_name=policy_name,
        version=version,
        created_at=created_at or datetime.now(UTC),
        body=body,
        private_key=private_key,
        signing_key_id=key_id,
    )


def publish(
    kafka: KafkaSettings,
    payload: ThresholdUpdate | bytes,
    *,
    key: str | None = None,
    topic: str = "policy-control",
    timeout: float = 15.0,
) -> None:
    """Produce one control message and wait for the broker's ack.

    Args:
        kafka: Connection settings (the topic prefix applies).
        payload: An update, or raw bytes (to test how nodes treat garbage).
        key: The Kafka key; the update's policy name by default.
        topic: Logical control topic.
        timeout: Seconds to wait for delivery.

    Raises:
        NodeError: if the message was not delivered.
    """
    if isinstance(payload, ThresholdUpdate):
        key = key or payload.policy_name
        payload = payload.to_bytes()
    producer = reliable_producer(
        kafka, name="control test producer", extra={"delivery.timeout.ms": int(timeout * 1000)}
    )
    _, why = deliver(producer, f"{kafka.topic_prefix}{topic}", payload, key, timeout + 5.0)
    if why is not None:
        msg = f"control message not delivered: {why}"
        raise NodeError(msg)


def read_acks(
    kafka: KafkaSettings,
    until: Callable[[list[PolicyAck]], bool],
    *,
    topic: str = "policy-acks",
    timeout: float = 30.0,
) -> list[PolicyAck]:
    """Read the ack topic from the beginning until ``until(acks)`` holds or time runs out."""
    physical = f"{kafka.topic_prefix}{topic}"
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"ack-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    acks: list[PolicyAck] = []
    try:
        meta = consumer.list_topics(physical, timeout=timeout).topics[physical]
        consumer.assign([TopicPartition(physical, p, OFFSET_BEGINNING) for p in meta.partitions])
        deadline = time.monotonic() + timeout
        while not until(acks) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            value = message.value()
            if value is not None:
                acks.append(PolicyAck.from_bytes(value))
    finally:
        consumer.close()
    return acks
