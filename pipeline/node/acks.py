"""Acknowledgements of control messages, to the ack topic keyed by node id.

Acks are best effort: a node whose broker is away keeps serving, and the
publisher sees the missing ack. Production failures are logged, never raised
into the control loop.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message

from pipeline.node.kafka import KafkaSettings, reliable_producer
from schemas import PolicyAck

log = logging.getLogger(__name__)


class AckSender:
    """Produces one :class:`PolicyAck` per control message answered."""

    def __init__(self, kafka: KafkaSettings, topic: str, node_id: str) -> None:
        self._topic = topic
        self._node_id = node_id
        self._producer = reliable_producer(
            kafka, name="ack producer", extra={"linger.ms": 0, "on_delivery": self._on_delivery}
        )

    def applied(self, policy_name: str, version: int, applied_at: datetime) -> PolicyAck:
        """Acknowledge that ``version`` is served (since ``applied_at``)."""
        return self._send(
            PolicyAck(
                node_id=self._node_id,
                policy_name=policy_name,
                version=version,
                ts=datetime.now(UTC),
                status="applied",
                applied_at=applied_at,
            )
        )

    def refused(self, policy_name: str, version: int, reason: str) -> PolicyAck:
        """Report that ``version`` was refused, and why."""
        return self._send(
            PolicyAck(
                node_id=self._node_id,
                policy_name=policy_name,
                version=version,
                ts=datetime.now(UTC),
                status="refused",
                reason=reason or "refused",
            )
        )

    def poll(self) -> None:
        """Serve delivery reports."""
        self._producer.poll(0)

    def close(self, timeout: float) -> None:
        """Deliver what is queued, for up to ``timeout`` seconds."""
        left = self._producer.flush(timeout)
        if left:
            log.warning("%d policy acks were not delivered before shutdown", left)

    def _send(self, ack: PolicyAck) -> PolicyAck:
        try:
            self._producer.produce(self._topic, ack.to_bytes(), self._node_id)
        except (BufferError, KafkaException) as exc:
            log.warning("cannot queue the ack of %s v%d: %s", ack.policy_name, ack.version, exc)
        self._producer.poll(0)
        return ack

    @staticmethod
    def _on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            log.warning("a policy ack was not delivered: %s", err)
