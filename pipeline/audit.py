"""The audit trail: one record per review action or publication, on ``policy-audit``.

MLflow tags hold the current state of each version; the audit topic (kept
forever, keyed by policy name) holds the history of who did what, when and
why, which tags cannot: a tag is overwritten, an audit record is not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import Field

from pipeline.errors import AuditError
from pipeline.node.kafka import KafkaSettings, deliver, reliable_producer
from schemas import Id, Message, ShortText, Timestamp

log = logging.getLogger(__name__)

AuditAction = Literal[
    "proposed",
    "auto_approved",
    "approved",
    "rejected",
    "rolled_back",
    "published",
    "publish_refused",
    "review_refused",
]


class AuditEvent(Message):
    """One action on one policy version."""

    event_id: Id
    """Unique id of this record (a uuid)."""
    ts: Timestamp
    """When the action took effect."""
    action: AuditAction
    """What happened."""
    policy_name: Id
    """The policy (the control topic key)."""
    model_name: Id
    """The MLflow registered model that holds the policy's versions."""
    version: int = Field(ge=1, le=2**63 - 1)
    """The MLflow model version acted on (for a rollback: the new version)."""
    actor: Id
    """Who acted: a reviewer (the MLflow user it authenticated as), ``auto``,
    ``controller`` or ``publisher``."""
    reason: ShortText
    """Why, in the actor's words."""
    details: dict[Id, ShortText] = Field(default_factory=dict, max_length=32)
    """Extra facts, e.g. ``rollback_of``, ``restores``, ``previous_production``."""

    @classmethod
    def new(
        cls,
        action: AuditAction,
        *,
        policy_name: str,
        model_name: str,
        version: int,
        actor: str,
        reason: str,
        details: Mapping[str, object] | None = None,
    ) -> Self:
        """An event stamped now with a fresh id; ``details`` values become strings."""
        return cls(
            event_id=uuid.uuid4().hex,
            ts=datetime.now(UTC),
            action=action,
            policy_name=policy_name,
            model_name=model_name,
            version=version,
            actor=actor,
            reason=reason[:1024],
            details={k: str(v)[:1024] for k, v in (details or {}).items()},
        )


AuditSink = Callable[[AuditEvent], None]
"""Where audit events go; raises :class:`AuditError` when one is not recorded."""


class KafkaAuditLog:
    """Produces audit events to the audit topic and waits for each to be stored.

    Args:
        kafka: How to reach Kafka (its topic prefix applies).
        topic: Logical audit topic.
        timeout_s: How long one event may take to be acknowledged.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, timeout_s: float = 15.0) -> None:
        self.topic = f"{kafka.topic_prefix}{topic}"
        self._timeout = timeout_s
        self._producer = reliable_producer(
            kafka,
            name="audit producer",
            extra={"linger.ms": 0, "delivery.timeout.ms": int(timeout_s * 1000)},
        )

    def check(self) -> None:
        """Fail early, before an action, when the audit topic cannot be reached.

        Raises:
            AuditError: if the broker does not answer or the topic is missing.
        """
        from confluent_kafka import KafkaException

        try:
            meta = self._producer.list_topics(self.topic, timeout=self._timeout)
        except KafkaException as exc:
            msg = f"audit topic {self.topic} is not reachable: {exc}"
            raise AuditError(msg) from None
        found = meta.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            msg = f"audit topic {self.topic} does not exist: run `pipeline topics create`"
            raise AuditError(msg)

    def __call__(self, event: AuditEvent) -> None:
        """Produce ``event`` keyed by policy name and wait until the broker stores it.

        Raises:
            AuditError: if the event was not stored within the timeout.
        """
        value, key = event.to_bytes(), event.policy_name
        _, why = deliver(self._producer, self.topic, value, key, self._timeout + 5.0)
        if why is not None:
            msg = f"audit event {event.action} v{event.version} not stored in {self.topic}: {why}"
            raise AuditError(msg)

    def close(self) -> None:
        """Deliver anything still queued."""
        self._producer.flush(self._timeout)


def best_effort(sink: AuditSink | None) -> AuditSink:
    """A sink that logs instead of raising (for the publisher's loop), or a no-op."""

    def send(event: AuditEvent) -> None:
        if sink is None:
            return
        try:
            sink(event)
        except Exception as exc:  # noqa: BLE001  # an audit hiccup must not stop publishing
            log.warning("audit event %s v%d lost: %s", event.action, event.version, exc)

    return send
