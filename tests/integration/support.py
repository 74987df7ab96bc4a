"""Helpers the integration tests share; the fixtures are in ``conftest.py`` beside this file.

Ports and settings, polling, the ``pipeline`` CLI as a child process, reading
Kafka topics and consumer-group offsets, ClickHouse queries, and private
services to stop and start. Helpers of one area build on these:
``_stream.py`` (stream inputs, the worker or the sink on a thread, the
worker's consumer lags), ``_control.py`` (policies, proposals, acks, the
policy CLI) and ``_faults.py`` (the worker as a process to SIGKILL, traffic at
a rate, counts after dedup).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from pipeline.config import Settings, load_settings, settings_env, with_stored_secrets
from pipeline.node.kafka import KafkaSettings
from pipeline.stack import manager
from pipeline.stack.process import ProcessTable
from pipeline.warehouse.client import connect

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]

# -- ports and settings ----------------------------------------------------------------


def free_port() -> int:
    """A loopback port that is free right now (nothing listens on it once this returns)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_settings(state_dir: Path, **extra: object) -> Settings:
    """Settings for a private embedded stack on free ports."""
    return load_settings(
        state_dir=state_dir,
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        clickhouse={"url": f"http://127.0.0.1:{free_port()}"},
        mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"},
        embedded={"kafka_controller_port": free_port(), "kafka_heap": "512m"},
        **extra,
    )


def with_prefix(settings: Settings, prefix: str) -> Settings:
    """The settings with another topic prefix."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    return settings.model_copy(update={"kafka": kafka})


# -- waiting ---------------------------------------------------------------------------


def eventually(
    probe: Callable[[], T | None],
    timeout_s: float = 45.0,
    what: str = "",
    diagnose: Callable[[], str] | None = None,
    interval_s: float = 0.25,
    process: subprocess.Popen[str] | None = None,
) -> T:
    """Poll until ``probe`` returns something truthy, and return it; fail naming ``what``.

    With ``process`` (started with ``stdout=PIPE``, text), the wait also fails
    as soon as that process exits, and on a timeout it is killed; either way the
    failure shows its output.
    """
    deadline = time.monotonic() + timeout_s
    waiting_for = what or repr(probe)
    while True:
        if process is not None and process.poll() is not None:
            output = process.communicate()[0]
            code = process.returncode
            pytest.fail(f"exited with {code} while waiting for {waiting_for}\n{output}")
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{diagnose()}" if diagnose is not None else ""
            if process is not None:
                process.kill()
                detail += f"\noutput:\n{process.communicate()[0]}"
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {waiting_for}{detail}")
        time.sleep(interval_s)


# -- processes -------------------------------------------------------------------------


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET a loopback path: status and body (0 when nothing answers)."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310  # a loopback URL we built
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{"name{labels}": value}``, plus ``name`` summed over its series."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, number = line.rpartition(" ")
        value = float(number)
        values[series] = value
        name = series.split("{", 1)[0]
        if name != series:
            values[name] = values.get(name, 0.0) + value
    return values


def cli_env(settings: Settings, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``pipeline`` child: no ambient ``PIPELINE_*``, these settings."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return {**full, **settings_env(settings), "COLUMNS": "200", **(env or {})}


def run_cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline.cli ARGS`` to the end against ``settings``; stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=cli_env(settings, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_process(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m pipeline.cli ARGS``; its stdout and stderr merged on one pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=cli_env(settings, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def write_policy_spec(folder: Path, policy: str) -> Path:
    """The repository's policy spec renamed to ``policy``, with its default policy beside it."""
    spec = folder / "spec.yaml"
    text = (REPO / "policies/earlystop.yaml").read_text()
    spec.write_text(text.replace("name: earlystop", f"name: {policy}"))
    (folder / "default_policy.json").write_text((REPO / "policies/default_policy.json").read_text())
    return spec


# -- Kafka -----------------------------------------------------------------------------


def read_topic(kafka: KafkaSettings, name: str, timeout_s: float = 60.0) -> list[Message]:
    """Every record of the logical topic ``name`` up to its end offsets now."""
    topic = f"{kafka.topic_prefix}{name}"
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"check-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "fetch.message.max.bytes": 16 * 1024 * 1024,
        }
    )
    got: list[Message] = []
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        todo = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            partition, err = int(msg.partition() or 0), msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001  # librdkafka's only name
                    todo.discard(partition)
                continue
            got.append(msg)
            if int(msg.offset() or 0) + 1 >= ends[partition]:
                todo.discard(partition)
        assert not todo, f"could not read {topic} to its end"
    finally:
        consumer.close()
    return got


def read_values(kafka: KafkaSettings, name: str) -> list[bytes]:
    """The values on a logical topic up to its end offsets (tombstones left out)."""
    return [value for msg in read_topic(kafka, name) if (value := msg.value()) is not None]


def partition_lags(
    settings: Settings, group: str, topics: tuple[str, ...]
) -> dict[tuple[str, int], tuple[int, int]]:
    """Per logical topic and partition: the group's committed offset (-1: none) and the end."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    found: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        for name in topics:
            topic = settings.topic(name)
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in partitions]
            for tp in consumer.committed(tps, timeout=30):
                _, high = consumer.get_watermark_offsets(tp, timeout=30)
                found[(name, tp.partition)] = (max(tp.offset, -1), high)
    finally:
        consumer.close()
    return found


def group_lag(settings: Settings, group: str, topics: tuple[str, ...]) -> int:
    """End offsets minus the group's committed offsets, summed over the topics' partitions."""
    lags = partition_lags(settings, group, topics)
    return sum(high - max(committed, 0) for committed, high in lags.values())


def committed_offsets(settings: Settings, group: str, topics: tuple[str, ...]) -> int:
    """The offsets the group has committed on the topics' partitions, summed (none: 0)."""
    lags = partition_lags(settings, group, topics)
    return sum(max(committed, 0) for committed, _ in lags.values())


# -- ClickHouse ------------------------------------------------------------------------


def query(settings: Settings, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of one ClickHouse query, on a connection of its own."""
    client = connect(settings)
    try:
        return list(client.query(sql, parameters=params).result_rows)
    finally:
        client.close()


# -- services of a test's own ----------------------------------------------------------


@dataclass
class PrivateStack:
    """Services of one test, in its own state folder on free ports: stop and start at will."""

    settings: Settings

    def stop(self, service: str) -> None:
        assert ProcessTable(self.settings.state_dir / "run").stop(service), f"{service} was down"

    def start(self, service: str) -> None:
        manager.up(self.settings, only={service})


@contextmanager
def private_stack(state_dir: Path, services: set[str]) -> Iterator[PrivateStack]:
    """Start ``services`` of a fresh embedded stack; stop them all at the end."""
    settings = stack_settings(state_dir)
    with manager.tethered(settings):  # stops these services if the session is killed
        try:
            manager.up(settings, only=services)
            yield PrivateStack(with_stored_secrets(settings))
        finally:
            manager.down(settings)


SERVICE_URLS = {"clickhouse": ("clickhouse", "url"), "mlflow": ("mlflow", "tracking_uri")}


@contextmanager
def private_service(settings: Settings, state_dir: Path, service: str) -> Iterator[PrivateStack]:
    """``settings`` with a ClickHouse or MLflow of its own, started in ``state_dir``.

    The other services stay the ones of ``settings``. The private one runs on a
    free port and is stopped at the end.
    """
    section, field = SERVICE_URLS[service]
    changed = getattr(settings, section).model_copy(
        update={field: f"http://127.0.0.1:{free_port()}"}
    )
    private = PrivateStack(settings.model_copy(update={"state_dir": state_dir, section: changed}))
    with manager.tethered(private.settings):
        try:
            private.start(service)
            yield private
        finally:
            manager.down(private.settings)
