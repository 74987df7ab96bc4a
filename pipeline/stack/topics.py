"""Kafka topics from the spec in ``infra/kafka/topics.yaml``, created idempotently.

The spec says what each topic holds (partitions, retention, compaction); how
many copies the cluster keeps is the deployment's choice and comes from
settings (``PIPELINE_TOPICS__REPLICATION_FACTOR`` and
``PIPELINE_TOPICS__MIN_INSYNC_REPLICAS``), so one spec serves the one-broker
embedded stack and a production cluster alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.config import Settings
from pipeline.errors import ConfigError, StackError

log = logging.getLogger(__name__)

_FROM_SETTINGS = {
    "replication_factor": "PIPELINE_TOPICS__REPLICATION_FACTOR",
    "min.insync.replicas": "PIPELINE_TOPICS__MIN_INSYNC_REPLICAS",
}


class TopicSpec(BaseModel):
    """One topic: partitions and topic-level config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int = Field(ge=1, le=1024)
    config: dict[str, str] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _no_replication(cls, value: dict[str, str]) -> dict[str, str]:
        if "min.insync.replicas" in value:
            msg = f"min.insync.replicas comes from {_FROM_SETTINGS['min.insync.replicas']}"
            raise ValueError(msg)
        return value


class TopicsSpec(BaseModel):
    """Every topic of the pipeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    co_partitioned: tuple[str, ...] = ()
    topics: dict[str, TopicSpec]

    @model_validator(mode="before")
    @classmethod
    def _no_replication_factor(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "replication_factor" in raw:
            msg = f"replication_factor comes from {_FROM_SETTINGS['replication_factor']}"
            raise ValueError(msg)
        return raw

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


def check_brokers(settings: Settings, brokers: int) -> None:
    """Refuse a replication factor the cluster cannot place.

    Raises:
        StackError: fewer live brokers than ``settings.topics.replication_factor``.
    """
    wanted = settings.topics.replication_factor
    if brokers < wanted:
        msg = (
            f"Kafka at {settings.kafka.bootstrap_servers} has {brokers} live broker(s), fewer "
            f"than PIPELINE_TOPICS__REPLICATION_FACTOR={wanted}: add brokers or lower the setting"
        )
        raise StackError(msg)


def new_topic_config(settings: Settings, topic: TopicSpec) -> dict[str, str]:
    """The config a new topic is created with: the spec's, plus ``min.insync.replicas``."""
    return {**topic.config, "min.insync.replicas": str(settings.topics.min_insync_replicas)}


def ensure_topics(
    settings: Settings, spec: TopicsSpec | None = None, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics; return ``{physical name: "created" | "exists"}``.

    Existing topics are never altered: a partition count that differs from the
    spec is reported as an error, since changing it would break co-partitioning;
    one with fewer replicas than the settings ask for is logged as a warning.
    New topics get the replication factor and ``min.insync.replicas`` of
    ``settings.topics``; creating any is refused when the cluster has fewer
    live brokers than that replication factor.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported at runtime, not in the stubs

    spec = spec or load_spec(spec_path(settings))
    admin = AdminClient(settings.kafka.client_config())
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        msg = f"Kafka at {settings.kafka.bootstrap_servers} is not reachable: {exc}"
        raise StackError(msg) from None
    existing = metadata.topics
    replicas = settings.topics.replication_factor
    result: dict[str, str] = {}
    wanted: list[NewTopic] = []
    for name, topic in spec.topics.items():
        physical = settings.topic(name)
        if physical in existing:
            partitions = existing[physical].partitions
            have = len(partitions)
            if have != topic.partitions:
                msg = (
                    f"topic {physical} has {have} partitions but the spec says "
                    f"{topic.partitions}: fix infra/kafka/topics.yaml or the topic"
                )
                raise StackError(msg)
            copies = min((len(p.replicas) for p in partitions.values()), default=replicas)
            if copies < replicas:
                log.warning(
                    "topic %s has %d replica(s) per partition, fewer than "
                    "PIPELINE_TOPICS__REPLICATION_FACTOR=%d; existing topics are not altered "
                    "(kafka-reassign-partitions.sh adds replicas)",
                    physical, copies, replicas,
                )  # fmt: skip
            result[physical] = "exists"
            continue
        wanted.append(
            NewTopic(
                physical,
                num_partitions=topic.partitions,
                replication_factor=replicas,
                config=new_topic_config(settings, topic),
            )
        )
    if not wanted:
        return result
    check_brokers(settings, len(metadata.brokers))
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
