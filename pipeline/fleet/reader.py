"""Kafka for the fleet view: acks from a point in time, and what the control topic holds.

Thin I/O: the consumer is assigned partitions and never joins a group (no
offsets are committed). The ack topic is read from the first offset at or
after the window's start (``offsets_for_times``) to the end offsets taken
when reading began; the control topic is read to its end as a node reads it
at start (:class:`~pipeline.node.control_log.ControlLog`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import ValidationError

from pipeline.fleet.errors import FleetUnavailableError
from pipeline.fleet.view import Publication
from pipeline.node.control_log import ControlLog
from pipeline.node.errors import ControlUnavailableError
from pipeline.node.kafka import KafkaLogBridge, KafkaSettings
from schemas import PolicyAck, ThresholdUpdate

log = logging.getLogger(__name__)

_EOF = KafkaError._PARTITION_EOF  # noqa: SLF001  # librdkafka's only name for end of partition


@dataclass
class AckLog:
    """The acks read, and how many records were not acks (skipped)."""

    acks: list[PolicyAck] = field(default_factory=list)
    malformed: int = 0


def read_publications(kafka: KafkaSettings, topic: str, timeout_s: float) -> list[Publication]:
    """Every ``ThresholdUpdate`` on the control topic ``topic`` (logical name).

    ``published_at`` is the update's ``created_at``: the publisher stamps it
    when it signs, just before it produces.

    Raises:
        FleetUnavailableError: if the topic cannot be read to its end within ``timeout_s``.
    """
    reader = ControlLog(kafka, f"{kafka.topic_prefix}{topic}", f"fleet-{uuid.uuid4().hex[:8]}")
    try:
        records = reader.read_to_end(time.monotonic() + timeout_s, threading.Event())
    except ControlUnavailableError as exc:
        raise FleetUnavailableError(str(exc)) from None
    finally:
        reader.close()
    published: list[Publication] = []
    for record in records:
        try:
            update = ThresholdUpdate.from_bytes(record.value)
        except ValidationError:
            log.info("control topic offset %d is not a ThresholdUpdate; ignored", record.offset)
            continue
        published.append(Publication(update.policy_name, update.version, update.created_at))
    return published


def read_acks(kafka: KafkaSettings, topic: str, since: datetime, timeout_s: float) -> AckLog:
    """The acks on ``topic`` (logical name) stored at or after ``since``.

    Raises:
        FleetUnavailableError: if the broker does not answer, the topic does not
            exist, or it is not read to its end within ``timeout_s``.
    """
    physical = f"{kafka.topic_prefix}{topic}"
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"earlystop-fleet-{uuid.uuid4().hex}",  # required, never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "logger": KafkaLogBridge(),
            "error_cb": lambda err: log.debug("ack consumer: %s", err),
        }
    )
    try:
        starts, ends = _window(consumer, physical, since, deadline)
        return _read(consumer, physical, starts, ends, deadline)
    except KafkaException as exc:
        msg = f"ack topic {physical} could not be read: {exc}"
        raise FleetUnavailableError(msg) from None
    finally:
        consumer.close()


def _window(
    consumer: Consumer, topic: str, since: datetime, deadline: float
) -> tuple[dict[int, int], dict[int, int]]:
    """First offset at or after ``since`` and end offset, per partition with records in range."""
    meta = consumer.list_topics(topic, timeout=_left(deadline))
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        why = found.error if found is not None and found.error is not None else "no partitions"
        msg = f"ack topic {topic} could not be read: {why}"
        raise FleetUnavailableError(msg)
    ms = int(since.timestamp() * 1000)
    wanted = [TopicPartition(topic, p, ms) for p in sorted(found.partitions)]
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for tp in consumer.offsets_for_times(wanted, timeout=_left(deadline)):
        _, high = consumer.get_watermark_offsets(tp, timeout=_left(deadline), cached=False)
        if 0 <= tp.offset < high:  # -1: no record at or after ``since``
            starts[tp.partition], ends[tp.partition] = tp.offset, high
    return starts, ends


def _read(
    consumer: Consumer, topic: str, starts: dict[int, int], ends: dict[int, int], deadline: float
) -> AckLog:
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    pending = set(starts)
    out = AckLog()
    while pending:
        if time.monotonic() >= deadline:
            msg = f"ack topic {topic} was not read to its end in time"
            raise FleetUnavailableError(msg)
        message = consumer.poll(0.2)
        if message is None:
            continue
        err, partition, offset = message.error(), message.partition(), message.offset()
        if partition is None or offset is None:
            continue
        if err is not None and err.code() != _EOF:
            log.warning("ack topic: %s", err)
            continue
        if err is None and (value := message.value()) is not None:
            try:
                out.acks.append(PolicyAck.from_bytes(value))
            except ValidationError:
                out.malformed += 1
        if err is not None or offset + 1 >= ends.get(partition, 0):
            pending.discard(partition)
    return out


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
