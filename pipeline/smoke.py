"""The smoke round trip: one event through every real service of the stack.

Produce an InferenceEvent to Kafka, consume it back and validate it against
its contract, write it as a row to ClickHouse and read the row back, and
register a policy version in MLflow. Each step reports what it did; the first
failure raises with a line naming the service.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.errors import PipelineError, StackError
from pipeline.node.kafka import reliable_producer
from schemas import InferenceEvent, Segment

SMOKE_MODEL = "earlystop-smoke"


@dataclass
class SmokeReport:
    """What each step did, in order."""

    request_id: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def add(self, step: str, what: str) -> None:
        """Record one step."""
        self.steps.append((step, what))


def sample_event(request_id: str) -> InferenceEvent:
    """A plausible early-stopped inference event."""
    return InferenceEvent(
        event_id=f"ev-{uuid.uuid4().hex}",
        request_id=request_id,
        node_id="smoke-node",
        ts=datetime.now(UTC),
        model="smoke-model",
        segment=Segment(task="qa", length_bucket="short", tenant="smoke"),
        policy_name="default",
        policy_version=0,
        threshold=0.9,
        arm="production",
        exploration=False,
        tokens_prompt=42,
        tokens_generated=17,
        tokens_budget=64,
        stop_reason="confident",
        confidence=0.93,
        answer="Paris",
        latency_ms=12.5,
        node_load=0.4,
        trajectory=None,
    )


def produce_and_consume(settings: Settings, event: InferenceEvent) -> tuple[int, int, bytes]:
    """Produce ``event`` keyed by request_id; read it back; return partition, offset, value."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topic = settings.topic("inference-events")
    conf = settings.kafka.client_config()
    producer = reliable_producer(settings.kafka, name="smoke producer")
    delivered: list[Any] = []
    producer.produce(
        topic,
        key=event.request_id.encode(),
        value=event.to_bytes(),
        on_delivery=lambda err, msg: delivered.append(err or msg),
    )
    producer.flush(30)
    if not delivered or isinstance(delivered[0], Exception) or delivered[0].error():
        msg = f"Kafka at {settings.kafka.bootstrap_servers} did not accept the event: {delivered}"
        raise StackError(msg)
    partition, offset = delivered[0].partition(), delivered[0].offset()
    consumer = Consumer(
        {**conf, "group.id": f"smoke-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            record = consumer.poll(1.0)
            if record is None:
                continue
            if record.error():
                raise KafkaException(record.error())
            value = record.value()
            if value is None:
                break
            return partition, offset, value
    finally:
        consumer.close()
    msg = f"the event produced to {topic}[{partition}]@{offset} did not come back within 30 s"
    raise StackError(msg)


def write_row(settings: Settings, event: InferenceEvent, partition: int, offset: int) -> int:
    """Insert the event into ClickHouse and return how many rows have its request_id."""
    from pipeline.warehouse.client import connect
    from pipeline.warehouse.rows import inference_event_row

    client = connect(settings)
    try:
        columns, row = inference_event_row(
            event, settings.topic("inference-events"), partition, offset
        )
        client.insert("inference_events", [row], column_names=columns)
        result = client.query(
            "SELECT count() FROM inference_events FINAL WHERE request_id = {rid:String}",
            parameters={"rid": event.request_id},
        )
        return int(result.result_rows[0][0])
    finally:
        client.close()


def register_version(settings: Settings, event: InferenceEvent) -> tuple[str, str]:
    """Log a run with a policy artifact and register it as a model version."""
    from pipeline.registry.client import connect, ensure_experiment, ensure_registered_model

    client = connect(settings.mlflow)
    experiment_id = ensure_experiment(client, f"{settings.mlflow.experiment}-smoke")
    run = client.create_run(experiment_id, run_name=event.request_id)
    run_id = run.info.run_id
    client.log_param(run_id, "threshold", event.threshold)
    client.log_metric(run_id, "tokens_generated", event.tokens_generated)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text(json.dumps({"global": {"threshold": event.threshold}}, indent=2))
        client.log_artifact(run_id, str(policy), artifact_path="policy")
    client.set_terminated(run_id)
    ensure_registered_model(client, SMOKE_MODEL, "smoke round trips of the embedded stack")
    version = client.create_model_version(
        SMOKE_MODEL,
        source=f"{run.info.artifact_uri}/policy",
        run_id=run_id,
        tags={"review_state": "smoke"},
    )
    return run_id, str(version.version)


def run_smoke(settings: Settings, on_step: Callable[[str, str], None] | None = None) -> SmokeReport:
    """Run the round trip; raise on the first failure."""
    request_id = f"smoke-{uuid.uuid4().hex[:12]}"
    report = SmokeReport(request_id)

    def step(name: str, what: str) -> None:
        report.add(name, what)
        if on_step:
            on_step(name, what)

    from pipeline.stack.kafka import broker_ready

    if not broker_ready(settings, timeout_s=5.0):
        msg = (
            f"Kafka at {settings.kafka.bootstrap_servers} is not reachable: "
            "is `pipeline up` running?"
        )
        raise StackError(msg)
    event = sample_event(request_id)
    partition, offset, value = produce_and_consume(settings, event)
    step(
        "kafka",
        f"produced and consumed {request_id} at "
        f"{settings.topic('inference-events')}[{partition}]@{offset}",
    )
    back = InferenceEvent.from_bytes(value)
    if back != event:
        msg = "the consumed event differs from the produced one"
        raise PipelineError(msg)
    step("contract", f"validated {len(value)} bytes as InferenceEvent v{back.schema_version}")
    rows = write_row(settings, back, partition, offset)
    step(
        "clickhouse",
        f"inserted the event; {rows} row for it in inference_events at {settings.clickhouse.url}",
    )
    run_id, version = register_version(settings, back)
    step(
        "mlflow",
        f"registered {SMOKE_MODEL} version {version} (run {run_id}) at "
        f"{settings.mlflow.tracking_uri}",
    )
    return report
