"""Reading the compacted control topic: to its end at start, then message by message.

Pure I/O; what to do with each record is the subscriber's business. The
consumer is assigned every partition from the beginning and never joins a
group (no offsets are committed), because every node must see every update.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.node.errors import ControlUnavailableError
from pipeline.node.kafka import KafkaLogBridge, KafkaSettings

log = logging.getLogger(__name__)

_EOF = KafkaError._PARTITION_EOF  # noqa: SLF001  # librdkafka's only name for end of partition


class Record(NamedTuple):
    """One control message with a value (tombstones are not records)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


class ControlLog:
    """The control topic, as seen by one node."""

    def __init__(self, kafka: KafkaSettings, topic: str, node_id: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"earlystop-node-{node_id}",  # required by librdkafka, never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "logger": KafkaLogBridge(),
                "error_cb": lambda err: log.debug("control consumer: %s", err),
            }
        )

    def read_to_end(self, deadline: float, stopping: threading.Event) -> list[Record]:
        """Assign every partition from the beginning and read up to the end offsets.

        Raises:
            ControlUnavailableError: if the topic cannot be read to its end by ``deadline``.
        """
        ends = self._end_offsets(deadline, stopping)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
        pending = {p for p, high in ends.items() if high >= 0}
        records: list[Record] = []
        while pending:
            if stopping.is_set():
                msg = "the subscriber is stopping"
                raise ControlUnavailableError(msg)
            if time.monotonic() >= deadline:
                msg = f"control topic {self.topic} was not read to its end in time"
                raise ControlUnavailableError(msg)
            message = self._consumer.poll(0.2)
            if message is None:
                continue
            err, partition, offset = message.error(), message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            if err is not None and err.code() != _EOF:
                log.warning("control topic: %s", err)
                continue
            if err is None and (value := message.value()) is not None:
                records.append(Record(partition, offset, message.key(), value))
            if err is not None or offset + 1 >= ends[partition]:
                pending.discard(partition)
        return records

    def poll(self, timeout: float) -> Record | None:
        """The next record after the end, or None (nothing new, a tombstone, or an event)."""
        message = self._consumer.poll(timeout)
        if message is None:
            return None
        err, partition, offset = message.error(), message.partition(), message.offset()
        if err is not None:
            if err.code() != _EOF:
                log.warning("control topic: %s", err)
            return None
        value = message.value()
        if value is None or partition is None or offset is None:
            return None  # a tombstone deletes history; it is not an update
        return Record(partition, offset, message.key(), value)

    def close(self) -> None:
        """Close the consumer (never while another thread polls it)."""
        self._consumer.close()

    def _end_offsets(self, deadline: float, stopping: threading.Event) -> dict[int, int]:
        """End offset per partition (-1 when empty), retrying until ``deadline``.

        A topic created a moment ago may be missing from metadata or have no
        leader yet; that is retried, not reported, until the deadline.
        """
        problem = "no answer"
        while not stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                meta = self._consumer.list_topics(self.topic, timeout=left)
                topic = meta.topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    ends: dict[int, int] = {}
                    for p in sorted(topic.partitions):
                        low, high = self._consumer.get_watermark_offsets(
                            TopicPartition(self.topic, p),
                            timeout=max(0.1, deadline - time.monotonic()),
                            cached=False,
                        )
                        ends[p] = high if high > low else -1
                    return ends
                problem = "it does not exist"
            except KafkaException as exc:
                problem = f"unreachable ({exc})"
            stopping.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        msg = f"control topic {self.topic} could not be read: {problem}"
        raise ControlUnavailableError(msg)
