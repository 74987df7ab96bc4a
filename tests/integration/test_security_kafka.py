"""Kafka with SASL: the embedded broker requires it when asked, and every client sends it.

A private broker (Kafka only, on free loopback ports) is started with
``PIPELINE_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT`` and the PLAIN mechanism;
ClickHouse and MLflow are the session stack's. Each client the project has
(the node SDK's emitter, control subscriber and ack producer, the publisher
and its audit log, topic admin, the simulator, the smoke command, the Faust
worker and its ClickHouse sink) then has to work against it, which it can
only do if the SASL settings reach its Kafka configuration.
"""

from __future__ import annotations

import signal
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from pipeline.audit import KafkaAuditLog
from pipeline.config import Settings
from pipeline.node import Node, NodeSettings
from pipeline.node.kafka import KafkaSettings
from pipeline.node.testing import read_acks
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.service import Publisher
from pipeline.registry.client import connect as mlflow_connect
from pipeline.registry.policies import register_proposal
from pipeline.stack import manager
from pipeline.stack.kafka import kafka_dir
from pipeline.stack.topics import ensure_topics
from pipeline.warehouse.client import connect as ch_connect
from schemas.examples import inference_event
from tests.integration._control import proposal
from tests.integration._stream import send_verdict_request
from tests.integration.support import cli_process, free_port, read_values, run_cli, with_prefix

pytestmark = pytest.mark.integration

USER = "earlystop-it"
PASSWORD = "sasl-Pa55-for-tests"  # noqa: S105  # a throwaway broker's password
KEY = "sasl-control-key"


@pytest.fixture(scope="module")
def sasl_stack(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The session stack's ClickHouse and MLflow with a private SASL-only broker."""
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=USER,
        sasl_password=SecretStr(PASSWORD),
    )
    embedded = stack.embedded.model_copy(update={"kafka_controller_port": free_port()})
    settings = stack.model_copy(
        update={
            "state_dir": tmp_path_factory.mktemp("sasl"),
            "kafka": kafka,
            "embedded": embedded,
        }
    )
    try:
        manager.up(settings, only={"kafka"})
        yield settings
    finally:
        manager.down(settings)


@pytest.fixture
def sasl(sasl_stack: Settings) -> Settings:
    """The SASL stack with a uuid topic prefix and its topics."""
    settings = with_prefix(sasl_stack, f"s{uuid.uuid4().hex[:10]}.")
    ensure_topics(settings)
    return settings


def with_password(kafka: KafkaSettings, password: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {**kafka.client_config(), "log_level": 0}
    if password is None:
        for name in ("sasl.mechanism", "sasl.username", "sasl.password"):
            conf.pop(name, None)
        conf["security.protocol"] = "PLAINTEXT"
    else:
        conf["sasl.password"] = password
    return conf


def end_offset(kafka: KafkaSettings, topic: str) -> int:
    consumer = Consumer({**kafka.client_config(), "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def consume(kafka: KafkaSettings, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() is not None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_the_broker_admits_the_configured_account_and_refuses_everyone_else(
    sasl: Settings,
) -> None:
    topic = sasl.topic("inference-events")
    good = Producer({**sasl.kafka.client_config(), "acks": "all"})
    good.produce(topic, key=b"k", value=b"with the right password")
    assert good.flush(30) == 0
    assert consume(sasl.kafka, topic, 1) == [b"with the right password"]

    for password in ("wrong-password", None):  # a wrong password, then no SASL at all
        admin = AdminClient(with_password(sasl.kafka, password))
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=5)
        bad = Producer({**with_password(sasl.kafka, password), "message.timeout.ms": 4000})
        failures: list[object] = []
        bad.produce(topic, value=b"refused", on_delivery=lambda err, _m, f=failures: f.append(err))
        bad.flush(10)
        assert failures and failures[0] is not None, password
    assert end_offset(sasl.kafka, topic) == 1  # nothing the refused producers sent landed

    # The KRaft controller listener requires the account too.
    host, _ = sasl.kafka.first_server
    controller = f"{host}:{sasl.embedded.kafka_controller_port}"
    plain = AdminClient({"bootstrap.servers": controller, "log_level": 0})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)

    config = kafka_dir(sasl) / "server.properties"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds the password
    for log in [*(kafka_dir(sasl) / "logs").iterdir(), *(sasl.state_dir / "logs").iterdir()]:
        assert PASSWORD not in log.read_text(errors="replace"), log


def test_node_publisher_and_audit_log_work_over_sasl(sasl: Settings, tmp_path: Path) -> None:
    model = f"test-sasl-{uuid.uuid4().hex[:12]}"
    ml = mlflow_connect(sasl.mlflow)
    register_proposal(ml, proposal(auto=True), experiment=sasl.mlflow.experiment, model_name=model)
    node_settings = NodeSettings.model_validate(
        {
            "node_id": "node-sasl",
            "signing_keys": {"control-it": SecretStr(KEY)},
            "allowed_algorithms": ["hmac-sha256"],
            "state_dir": tmp_path / "node",
            "bootstrap_timeout_s": 30.0,
            "retry_interval_s": 0.5,
        }
    )
    control = ControlSettings.model_validate(
        {
            "models": {"default": model},
            "algorithm": "hmac-sha256",
            "signing_key_id": "control-it",
            "signing_key": KEY,
            "bootstrap_timeout_s": 20,
        }
    )
    with Node(sasl.kafka, node_settings) as node:  # emitter, subscriber and acks
        assert node.subscriber.status().bootstrapped
        audit = KafkaAuditLog(sasl.kafka, "policy-audit")
        publisher = Publisher(sasl.kafka, sasl.mlflow, control, audit=audit)
        try:
            outcome = publisher.run_once()[0]
        finally:
            publisher.close()
            audit.close()
        assert (outcome.status, outcome.version) == ("published", 1), outcome.detail
        assert node.subscriber.wait_for_version(1, timeout=30)
        rid = f"sasl-{uuid.uuid4().hex[:8]}"
        event = inference_event().model_copy(update={"request_id": rid, "event_id": f"e-{rid}"})
        assert node.emitter is not None and node.emitter.emit(event)
    acks = read_acks(sasl.kafka, lambda got: any(a.version == 1 for a in got), timeout=30)
    assert [(a.node_id, a.status) for a in acks if a.version == 1] == [("node-sasl", "applied")]
    events = consume(sasl.kafka, sasl.topic("inference-events"), 1)
    assert [rid.encode() in raw for raw in events] == [True]
    assert read_values(sasl.kafka, "policy-audit")  # the audit producer got through too


def test_cli_topic_admin_simulator_and_smoke_work_over_sasl(sasl: Settings) -> None:
    fresh = with_prefix(sasl, f"c{uuid.uuid4().hex[:8]}.")
    created = run_cli(fresh, "topics", "create")
    assert created.returncode == 0, created.stdout + created.stderr
    assert created.stdout.count(": created") == 8

    sim = run_cli(fresh, "sim", "--nodes", "1", "--rate", "20", "--duration", "2", "--linger", "5")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert end_offset(fresh.kafka, fresh.topic("inference-events")) >= 30
    assert end_offset(fresh.kafka, fresh.topic("em-labels")) > 0

    smoke = run_cli(fresh, "smoke")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr

    wrong = fresh.model_copy(
        update={"kafka": fresh.kafka.model_copy(update={"sasl_password": SecretStr("nope-nope")})}
    )
    refused = run_cli(wrong, "topics", "create", timeout=180)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    for done in (created, sim, smoke, refused):
        assert PASSWORD not in done.stdout + done.stderr
        assert "nope-nope" not in done.stdout + done.stderr


@pytest.mark.slow
def test_the_stream_worker_joins_and_sinks_over_sasl(sasl: Settings) -> None:
    proc = cli_process(sasl, "worker")
    rid = send_verdict_request(sasl, "sasl")
    client = ch_connect(sasl)
    sql = "SELECT em FROM outcomes FINAL WHERE request_id = %(r)s"
    try:
        deadline = time.monotonic() + 120
        rows: list[Any] = []
        while time.monotonic() < deadline and proc.poll() is None:
            rows = client.query(sql, parameters={"r": rid}).result_rows
            if rows:
                break
            time.sleep(0.5)
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert rows == [(True,)], output
    assert proc.returncode == 0, output
    assert PASSWORD not in output
