"""The embedded stack itself: status, idempotent topics, clean failure, clean stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings, settings_env
from pipeline.errors import PortInUseError, StackError
from pipeline.secret_store import read_secret
from pipeline.stack import manager
from pipeline.stack.topics import ensure_topics, load_spec, spec_path
from tests.integration.support import eventually, stack_settings, with_prefix

pytestmark = pytest.mark.integration


def test_status_reports_every_service_up_with_its_url(stack: Settings) -> None:
    rows = {row.name: row for row in manager.status(stack)}
    assert set(rows) == {"kafka", "clickhouse", "mlflow"}
    for row in rows.values():
        assert row.up, row
        assert row.pid is not None
    assert rows["mlflow"].url == stack.mlflow.tracking_uri
    assert rows["clickhouse"].url.startswith(stack.clickhouse.url)


def test_up_again_starts_nothing_new(stack: Settings) -> None:
    before = {row.name: row.pid for row in manager.status(stack)}
    report = manager.up(stack)
    assert all("already running" in report[name] for name in before)
    assert {row.name: row.pid for row in manager.status(stack)} == before


def test_topics_are_created_idempotently_with_their_config(isolated: Settings) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    again = ensure_topics(isolated)
    spec = load_spec(spec_path(isolated))
    assert again == {isolated.topic(name): "exists" for name in spec.topics}
    admin = AdminClient(isolated.kafka.client_config())

    def partitions(topic: str) -> int | None:
        # A new topic reaches the broker's metadata a moment after it is created.
        found = admin.list_topics(topic, timeout=10).topics[topic]
        return None if found.error is not None else len(found.partitions)

    control = isolated.topic("policy-control")
    assert eventually(lambda: partitions(control), timeout_s=20, what="policy-control") == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, control)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"
    events = isolated.topic("inference-events")
    assert eventually(lambda: partitions(events), timeout_s=20, what="inference-events") == 6


def test_new_topics_carry_min_insync_replicas_from_the_settings(isolated: Settings) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(isolated.kafka.client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, isolated.topic("outcomes"))

    def describe() -> dict[str, Any] | None:
        try:  # a new topic reaches every broker's metadata a moment after it is created
            described: dict[str, Any] = admin.describe_configs([resource])[resource].result()
        except KafkaException:
            return None
        return described

    config = eventually(describe, timeout_s=20, what="the new topic's config")
    assert config["min.insync.replicas"].value == str(isolated.topics.min_insync_replicas)
    assert config["retention.ms"].value == "259200000"


def test_a_replication_factor_above_the_broker_count_is_refused(stack: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    topics = stack.topics.model_copy(update={"replication_factor": 2})
    settings = with_prefix(stack, f"rf{uuid.uuid4().hex[:10]}.").model_copy(
        update={"topics": topics}
    )
    with pytest.raises(StackError, match=r"1 live broker\(s\).*REPLICATION_FACTOR=2"):
        ensure_topics(settings)
    names = AdminClient(settings.kafka.client_config()).list_topics(timeout=10).topics
    assert not [name for name in names if name.startswith(settings.kafka.topic_prefix)]


def test_port_taken_gives_clear_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    host, port = settings.mlflow.host_port or ("", 0)
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        with pytest.raises(PortInUseError, match="PIPELINE_MLFLOW__TRACKING_URI"):
            manager.up(settings)
    # Kafka and the warehouse were started before the clash: both must be gone.
    from pipeline.stack.process import ProcessTable

    table = ProcessTable(settings.state_dir / "run")
    assert all(table.alive(name) is None for name in ("kafka", "clickhouse", "mlflow"))
    assert not any(row.up for row in manager.status(settings))


def test_cli_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    env = {**os.environ, **settings_env(settings)}
    cli = [sys.executable, "-m", "pipeline.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=240)

    started = run("up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        status = run("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        rows = [json.loads(line) for line in status.stdout.splitlines()]
        assert {r["name"] for r in rows if r["up"]} == {"kafka", "clickhouse", "mlflow"}
        pids = [r["pid"] for r in rows]
        assert all(pids)
        # The warehouse's writer password was generated, and only its file is named.
        stored = read_secret(settings.warehouse_password_path)
        assert stored is not None
        assert str(settings.warehouse_password_path) in started.stdout
        again = run("up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert read_secret(settings.warehouse_password_path) == stored  # kept, not rotated
        plain = run("status")
        for done in (started, again, status, plain):
            assert stored.get_secret_value() not in done.stdout + done.stderr
    finally:
        stopped = run("down")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:
        assert not _alive(pid), f"pid {pid} still running after `pipeline down`"
    after = run("status", "--json")
    assert after.returncode == 1
    assert not any(json.loads(line)["up"] for line in after.stdout.splitlines())


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"
