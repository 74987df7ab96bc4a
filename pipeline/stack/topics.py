"""Kafka topics from the spec in ``infra/kafka/topics.yaml``, created idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.config import Settings
from pipeline.errors import ConfigError, StackError


class TopicSpec(BaseModel):
    """One topic: partitions and topic-level config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int = Field(ge=1, le=1024)
    config: dict[str, str] = Field(default_factory=dict)


class TopicsSpec(BaseModel):
    """Every topic of the pipeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replication_factor: int = Field(default=1, ge=1)
    co_partitioned: tuple[str, ...] = ()
    topics: dict[str, TopicSpec]

    @model_validator(mode="after")
    def _co_partitioned(self) -> TopicsSpec:
        unknown = [t for t in self.co_partitioned if t not in self.topics]
        if unknown:
            msg = f"co_partitioned names unknown topics: {unknown}"
            raise ValueError(msg)
        counts = {self.topics[t].partitions for t in self.co_partitioned}
        if len(counts) > 1:
            msg = f"co_partitioned topics must have equal partition counts, got {sorted(counts)}"
            raise ValueError(msg)
        return self


def load_spec(path: Path) -> TopicsSpec:
    """Read and validate the topic spec; one clear error when it is wrong."""
    import yaml

    try:
        raw: Any = yaml.safe_load(path.read_text())
        return TopicsSpec.model_validate(raw)
    except OSError as exc:
        msg = f"cannot read the topic spec {path}: {exc.strerror}"
        raise ConfigError(msg) from None
    except ValueError as exc:  # yaml and pydantic errors both derive from it
        msg = f"invalid topic spec {path}: {exc}"
        raise ConfigError(msg) from None


def spec_path(settings: Settings) -> Path:
    """Where the topic spec lives."""
    return settings.infra_dir / "kafka" / "topics.yaml"


def ensure_topics(
    settings: Settings, spec: TopicsSpec | None = None, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics; return ``{physical name: "created" | "exists"}``.

    Existing topics are never altered: a partition count that differs from the
    spec is reported as an error, since changing it would break co-partitioning.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported at runtime, not in the stubs

    spec = spec or load_spec(spec_path(settings))
    admin = AdminClient(settings.kafka.client_config())
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        msg = f"Kafka at {settings.kafka.bootstrap_servers} is not reachable: {exc}"
        raise StackError(msg) from None
    result: dict[str, str] = {}
    wanted: list[NewTopic] = []
    for name, topic in spec.topics.items():
        physical = settings.topic(name)
        if physical in existing:
            have = len(existing[physical].partitions)
            if have != topic.partitions:
                msg = (
                    f"topic {physical} has {have} partitions but the spec says "
                    f"{topic.partitions}: fix infra/kafka/topics.yaml or the topic"
                )
                raise StackError(msg)
            result[physical] = "exists"
            continue
        wanted.append(
            NewTopic(
                physical,
                num_partitions=topic.partitions,
                replication_factor=spec.replication_factor,
                config=dict(topic.config),
            )
        )
    if not wanted:
        return result
    for physical, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            result[physical] = "created"
        except KafkaException as exc:
            if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":  # a concurrent creator won
                result[physical] = "exists"
                continue
            msg = f"creating topic {physical} failed: {exc}"
            raise StackError(msg) from None
    return result
