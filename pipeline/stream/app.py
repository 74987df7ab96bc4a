"""The Faust app of the joiner, built by a factory from settings.

One agent consumes the three co-partitioned inputs (raw bytes) and hands each
record to the pure :class:`~pipeline.stream.processor.Processor`, whose join
states live in a Faust table. Faust 0.15 has no working stream-stream join
(``Join.process`` raises ``NotImplementedError``), so the join is the table.

- Table store: ``memory://`` by default. Faust still writes every change to
  the table's compacted changelog topic and rebuilds the memory store from it
  at start (and on rebalance), so a restart loses nothing but takes time
  proportional to the open entries. ``rocksdb://`` (needs faust's rocksdb
  extra) keeps state on disk between starts.
- Delivery: at least once. Faust flushes produced outcomes, dead letters and
  changelog records before it commits input offsets; a crash in between
  replays inputs, which the join absorbs as duplicates or re-emits as
  identical row versions.
- Failure policy: bad input is dead-lettered and consumption goes on. Any
  other exception in the agent or the sweeper is reported to ``on_fatal`` and
  crashes the agent with ``CrashingSupervisor`` (Faust's default supervisor
  would restart it past the failing record: a silent loss).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.config import KafkaSettings, Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.metrics import Metrics
from pipeline.stream.processor import INPUTS, Processor, Record, Source

TABLE = "joins"
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, timezone-aware (the default :data:`Clock`)."""
    return datetime.now(UTC)


def changelog_topic(settings: Settings, stream: StreamSettings) -> str:
    """The join table's changelog topic, as Faust names it."""
    return f"{settings.topic(stream.app_id)}-{TABLE}-changelog"


def faust_credentials(kafka: KafkaSettings) -> Any:
    """The Faust credentials for the Kafka security settings (None for PLAINTEXT)."""
    import faust

    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        cafile = str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        context = ssl.create_default_context(cafile=cafile)
    if protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


class TableStore:
    """A :class:`~pipeline.stream.processor.StateStore` over a Faust table of bytes."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        """The state of ``key``, or None."""
        value: bytes | None = self.table.get(key.encode())
        return value

    def put(self, key: str, value: bytes) -> None:
        """Assign (never mutate): Faust only logs a value when it is reassigned."""
        self.table[key.encode()] = value

    def delete(self, key: str, shard: int) -> None:
        """Delete outside an agent, where Faust cannot infer the partition: log it ourselves."""
        raw_key = key.encode()
        self.table.data.pop(raw_key, None)
        self.table.send_changelog(shard, raw_key, None, value_serializer="raw")

    def forget(self, key: str) -> None:
        """Drop the local copy only; the partition's owner keeps the changelog."""
        self.table.data.pop(key.encode(), None)

    def items(self) -> Iterable[tuple[str, bytes]]:
        """A snapshot of the local entries."""
        return [(key.decode(), value) for key, value in list(self.table.data.items())]


@dataclass
class Joiner:
    """The built app and what the runner needs to watch it."""

    app: Any
    processor: Processor
    app_id: str


def build_app(
    settings: Settings,
    stream: StreamSettings,
    *,
    partitions: int,
    on_fatal: Callable[[BaseException], None],
    metrics: Metrics | None = None,
    clock: Clock = utcnow,
) -> Joiner:
    """Build the joiner's Faust app; nothing connects until it is started."""
    import faust
    from mode import CrashingSupervisor

    app_id = settings.topic(stream.app_id)
    app = faust.App(
        app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings.kafka),
        broker_client_id=settings.kafka.client_id,
        broker_commit_interval=stream.commit_interval_s,
        store=stream.store,
        autodiscover=False,
        web_enabled=False,
        topic_partitions=partitions,
        topic_disable_leader=True,  # the leader topic serves features we do not use
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        agent_supervisor=CrashingSupervisor,
    )
    by_topic: dict[str, Source] = {settings.topic(name): name for name in INPUTS}
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inputs = app.topic(*by_topic, **raw)
    outcomes = app.topic(settings.topic("outcomes"), **raw)
    dead_letters = app.topic(settings.topic("dead-letters"), **raw)
    table = app.Table(
        TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help="Join state per request_id (JoinState bytes).",
    )
    processor = Processor(TableStore(table), stream.effective_worker_id(), metrics)
    events_topic = settings.topic("inference-events")

    async def joiner(records: Any) -> None:
        async for event in records.events():
            message = event.message
            record = Record(
                by_topic[message.topic],
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
            )
            try:
                result = processor.process(record, clock())
                if result.outcome is not None:
                    key = result.outcome.request_id.encode()
                    await outcomes.send(key=key, value=result.outcome.to_bytes())
                if result.dead_letter is not None:
                    await dead_letters.send(key=message.key, value=result.dead_letter.to_bytes())
            except Exception as exc:
                on_fatal(exc)
                raise

    async def sweeper() -> None:
        # Mid-rebalance a partition's state may be half recovered: wait.
        if app.rebalancing or app.in_recovery:
            return
        try:
            owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == events_topic}
            for outcome in processor.expire(clock(), stream.join_window_s, owned):
                await outcomes.send(key=outcome.request_id.encode(), value=outcome.to_bytes())
        except Exception as exc:
            on_fatal(exc)
            raise

    app.agent(inputs, name="joiner")(joiner)
    app.timer(stream.sweep_interval_s, name="sweeper")(sweeper)
    return Joiner(app, processor, app_id)
