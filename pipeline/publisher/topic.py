"""The control topic as the publisher sees it: what is on it, and adding to it.

The topic is the record of what was published: the publisher reads it to
its end offsets (as a node does at start) to learn the newest version of
each policy, so a restart never republishes a version nor an older one.
"""

from __future__ import annotations

import logging
import threading
import time

from pydantic import ValidationError

from pipeline.node.control_log import ControlLog
from pipeline.node.errors import ControlUnavailableError
from pipeline.node.kafka import KafkaSettings, deliver, reliable_producer
from pipeline.publisher.errors import PublishError
from schemas import ThresholdUpdate

log = logging.getLogger(__name__)


def published_versions(kafka: KafkaSettings, topic: str, timeout_s: float) -> dict[str, int]:
    """Newest version per policy name on the control topic (read to its end offsets).

    Every message that parses as a ThresholdUpdate counts, whatever its
    signature: a node may have applied it, so a lower version would be refused.

    Raises:
        PublishError: if the topic cannot be read to its end within ``timeout_s``.
    """
    reader = ControlLog(kafka, f"{kafka.topic_prefix}{topic}", "policy-publisher")
    try:
        records = reader.read_to_end(time.monotonic() + timeout_s, threading.Event())
    except ControlUnavailableError as exc:
        raise PublishError(str(exc)) from None
    finally:
        reader.close()
    newest: dict[str, int] = {}
    for record in records:
        try:
            update = ThresholdUpdate.from_bytes(record.value)
        except ValidationError:
            log.warning("control topic offset %d is not a ThresholdUpdate; ignored", record.offset)
            continue
        newest[update.policy_name] = max(newest.get(update.policy_name, 0), update.version)
    return newest


class ControlProducer:
    """Produces updates keyed by policy name with acks=all and idempotence, one at a time.

    Each send waits for the broker's answer. librdkafka gives up on a message
    after ``timeout_s`` (``delivery.timeout.ms``), and the flush waits longer
    than that, so when :meth:`send` returns or raises the message's fate is
    settled, except that a timed-out message may still have been written:
    the caller must re-read the topic before trying again.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, timeout_s: float) -> None:
        self.topic = f"{kafka.topic_prefix}{topic}"
        self._timeout = timeout_s
        self._producer = reliable_producer(
            kafka,
            name="control producer",
            extra={"linger.ms": 0, "delivery.timeout.ms": int(timeout_s * 1000)},
        )

    def warm_up(self) -> None:
        """Connect to the broker now (metadata of the topic), so the first send pays no setup.

        Raises:
            confluent_kafka.KafkaException: the broker did not answer in time.
        """
        self._producer.list_topics(self.topic, timeout=self._timeout)

    def send(self, update: ThresholdUpdate) -> int:
        """Produce ``update`` and wait until it is stored; return its offset.

        Raises:
            PublishError: if it was not stored (it may still have been written).
        """
        value, key = update.to_bytes(), update.policy_name
        offset, why = deliver(self._producer, self.topic, value, key, self._timeout + 10.0)
        if offset is None:
            msg = f"v{update.version} not confirmed by {self.topic}: {why}"
            raise PublishError(msg)
        return offset

    def close(self) -> None:
        """Flush and drop the producer."""
        self._producer.flush(self._timeout)
