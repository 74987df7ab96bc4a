"""Start-up checks on Kafka: the join inputs exist and are co-partitioned.

The join keeps each request's state in the partition its inputs arrive on,
so all three inputs must have the same partition count (and be keyed by
request_id with one partitioner). Faust would not notice a mismatch until a
table write, so the worker checks with the admin client before it starts.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.config import Settings
from pipeline.stream.errors import TopicsError
from pipeline.stream.processor import INPUTS

OUTPUTS = ("outcomes", "dead-letters")


def _metadata(settings: Settings, timeout_s: float) -> Any:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    try:
        return admin, admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        msg = f"Kafka at {settings.kafka.bootstrap_servers} is not reachable: {exc}"
        raise TopicsError(msg) from None


def _partition_counts(metadata: Any, names: list[str]) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    missing: list[str] = []
    for physical in names:
        topic = metadata.topics.get(physical)
        if topic is None or topic.error is not None:
            missing.append(physical)
        else:
            counts[physical] = len(topic.partitions)
    return counts, missing


def check_topics(settings: Settings, timeout_s: float = 30.0, settle_s: float = 10.0) -> int:
    """Return the common partition count of the join inputs.

    A topic created a moment ago may not be in the metadata yet (or have no
    leader yet), so missing topics are looked up again for ``settle_s``.

    Raises:
        TopicsError: a topic is missing, or the inputs' partition counts differ.
    """
    names = [settings.topic(name) for name in (*INPUTS, *OUTPUTS)]
    deadline = time.monotonic() + settle_s
    while True:
        _, metadata = _metadata(settings, timeout_s)
        counts, missing = _partition_counts(metadata, names)
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if missing:
        msg = f"topics {', '.join(missing)} do not exist: run `pipeline topics create`"
        raise TopicsError(msg)
    inputs = {name: counts[name] for name in names[: len(INPUTS)]}
    if len(set(inputs.values())) != 1:
        shown = ", ".join(f"{name}={n}" for name, n in inputs.items())
        msg = (
            f"the join inputs are not co-partitioned ({shown}): they must have equal "
            f"partition counts; recreate them from infra/kafka/topics.yaml"
        )
        raise TopicsError(msg)
    return next(iter(inputs.values()))


def ensure_changelog(
    settings: Settings, topic: str, partitions: int, timeout_s: float = 30.0
) -> str:
    """Create the table's compacted changelog topic unless it exists with ``partitions``.

    Created here rather than by Faust so its cleanup policy and partition
    count are explicit, and a mismatch is one clear error.

    Raises:
        TopicsError: the topic exists with another partition count, or creation failed.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported at runtime, not in the stubs

    admin, metadata = _metadata(settings, timeout_s)
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != partitions:
            msg = (
                f"changelog topic {topic} has {len(existing.partitions)} partitions but the "
                f"inputs have {partitions}: delete it (the state rebuilds from the inputs' "
                f"retention only if you replay them) or restore the inputs' count"
            )
            raise TopicsError(msg)
        return "exists"
    new = NewTopic(
        topic,
        num_partitions=partitions,
        replication_factor=-1,  # the broker's default.replication.factor
        config={"cleanup.policy": "compact"},
    )
    future = admin.create_topics([new], request_timeout=timeout_s)[topic]
    try:
        future.result()
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            msg = f"creating changelog topic {topic} failed: {exc}"
            raise TopicsError(msg) from None
    return "created"
