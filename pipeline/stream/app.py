"""The Faust app of the joiner, built by a factory from settings.

One agent consumes the three co-partitioned inputs (raw bytes) in batches
(``noack_take``: up to ``batch_max_records`` records or ``batch_max_s``
seconds) and hands each batch to the pure
:class:`~pipeline.stream.processor.Processor`, whose join states live in a
Faust table. Faust 0.15 has no working stream-stream join (``Join.process``
raises ``NotImplementedError``), so the join is the table.

- Batches: a key changed several times in a batch is written to the table
  (and its changelog) once. Writes name their partition explicitly, since
  outside per-event iteration Faust cannot infer it from the current event.
  Records fetched before a rebalance (an older consumer generation) are left
  alone: Faust delivers them again from the committed offset, or to the new
  owner.

- Table store: ``memory://`` by default. Faust still writes every change to
  the table's compacted changelog topic and rebuilds the memory store from it
  at start (and on rebalance), so a restart loses nothing but takes time
  proportional to the open entries. ``rocksdb://`` (needs ``rocksdict``,
  not installed by this project) keeps state on disk between starts, under
  ``<state_dir>/stream/<app id>``, where Faust keeps its app data either way.
- Delivery: at least once. A batch's outcomes are delivered (acks=all)
  before its join states go to the changelog, so a crash between the two
  replays inputs into states without them, which re-emits the same row
  versions (the sink stores each version once); the other order could lose an
  outcome. A batch's records are acknowledged only after its outcomes, dead
  letters and changelog records are in the producer, and
  Faust flushes the producer before it commits input offsets; a crash in
  between replays inputs, which the join absorbs as duplicates or re-emits as
  identical row versions. A batch that fails is never acknowledged. Offsets
  are committed only up to the first record not acknowledged, with Faust's
  "gap" skipping turned off, and nothing fetched before Faust's seek to the
  committed offsets is handed out after it (:mod:`~pipeline.stream.faust_io`:
  after a failover, Faust's own handling could leave records unprocessed).
- Failure policy: bad input is dead-lettered and consumption goes on. Any
  other exception in the agent or the sweeper, and any record the producer
  fails to deliver, is reported to ``on_fatal``; the agent crashes with
  ``CrashingSupervisor`` (Faust's default supervisor would restart it past
  the failing batch: a silent loss).
- Driver: aiokafka. Faust's ``confluent://`` driver in 0.15.3 never gets a
  partition assignment against Kafka 4.1 (see BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.config import Settings
from pipeline.node.kafka import KafkaSettings
from pipeline.stream.config import StreamSettings
from pipeline.stream.faust_io import SeekGuard, Sender, TableStore, ignore_offset_gaps
from pipeline.stream.metrics import Metrics
from pipeline.stream.processor import INPUTS, InputRecord, OutcomeRecord, Processor, Source

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
    datadir = settings.state_dir / "stream"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings.kafka),
        broker_client_id=settings.kafka.client_id,
        broker_commit_interval=stream.commit_interval_s,
        broker_max_poll_records=stream.max_poll_records,
        store=stream.store,
        autodiscover=False,
        web_enabled=False,
        # Faust's default is "<app id>-data" in the working directory: one
        # folder per app id wherever the worker was started from.
        datadir=str(datadir / app_id),
        topic_partitions=partitions,
        topic_disable_leader=True,  # the leader topic serves features we do not use
        consumer_auto_offset_reset="earliest",
        # The agent's buffer: room for a full batch while the previous one is processed.
        stream_buffer_maxsize=max(4096, 2 * stream.batch_max_records),
        producer_acks=-1,
        producer_linger=stream.producer_linger_s,
        producer_max_batch_size=stream.producer_batch_bytes,
        agent_supervisor=CrashingSupervisor,
    )
    by_topic: dict[str, Source] = {settings.topic(name): name for name in INPUTS}
    ignore_offset_gaps(app.consumer)
    SeekGuard(app.consumer, by_topic).install()
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inputs = app.topic(*by_topic, **raw)
    table = app.Table(
        TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help="Join state per request_id (JoinState bytes).",
    )
    outcomes_topic = settings.topic("outcomes")
    letters_topic = settings.topic("dead-letters")
    events_topic = settings.topic("inference-events")

    sender = Sender(app, on_fatal)
    store = TableStore(table, sender)
    processor = Processor(
        store, stream.effective_worker_id(), metrics, cache_entries=stream.state_cache_entries
    )

    # Outcomes are delivered before the join states that record them go to the
    # changelog: the other way round, a crash between the two would leave a
    # state that says "emitted" for an outcome that never was, and its inputs
    # replayed as duplicates would emit nothing. One turn at a time (agent or
    # sweeper), so neither sends the other's states ahead of its outcomes.
    turn = asyncio.Lock()

    async def publish(outcomes: Sequence[OutcomeRecord]) -> None:
        sent = [await sender.send(outcomes_topic, key, value) for key, value in outcomes]
        if sent:
            await asyncio.gather(*sent)

    async def handle(events: Sequence[Any]) -> None:
        generation = app.consumer_generation_id
        records: list[InputRecord] = []
        current: list[Any] = []
        for event in events:
            message = event.message
            if message.generation_id != generation:
                continue  # fetched before a rebalance: delivered again
            current.append(event)
            records.append(
                InputRecord(
                    by_topic[message.topic],
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                )
            )
        async with turn:
            result = processor.process_batch(records, clock())
            for letter in result.dead_letters:
                await sender.send(letters_topic, letter.key, letter.to_bytes())
            await publish(result.outcomes)
            await store.send_changelog()
        # Everything is in the producer: the flush before the next commit covers it.
        for event in current:
            event.ack()

    async def joiner(stream_: Any) -> None:
        batches = stream_.noack_take(stream.batch_max_records, within=stream.batch_max_s)
        async for events in batches:
            try:
                await handle(events)
            except Exception as exc:
                on_fatal(exc)
                raise

    async def sweeper() -> None:
        # Mid-rebalance a partition's state may be half recovered: wait.
        if app.rebalancing or app.in_recovery:
            return
        try:
            owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == events_topic}
            async with turn:
                await publish(list(processor.expire(clock(), stream.join_window_s, owned)))
                await store.send_changelog()
        except Exception as exc:
            on_fatal(exc)
            raise

    app.agent(inputs, name="joiner")(joiner)
    app.timer(stream.sweep_interval_s, name="sweeper")(sweeper)
    return Joiner(app, processor, app_id)
