"""`pipeline worker` as a process: health, metrics, a clean SIGTERM, clear failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.config import Settings, settings_env
from pipeline.stream.config import StreamSettings
from pipeline.warehouse.client import connect
from schemas import EMLabel
from schemas.examples import inference_event
from tests.conftest import free_port

pytestmark = pytest.mark.integration

# Registers the command the way _app.py will, without depending on that edit.
LAUNCH = "import pipeline.cli.stream; from pipeline.cli._app import main; main()"


def worker_process(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:  # noqa: S310  # a loopback URL we built
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_for(probe: object, timeout_s: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if probe():  # type: ignore[operator]
            return
        time.sleep(0.25)
    proc.kill()
    pytest.fail(f"timed out; worker output:\n{proc.communicate()[0]}")


def joiner_lag(settings: Settings) -> int:
    group = settings.topic(StreamSettings().app_id)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    lag = 0
    try:
        for name in ("inference-events", "em-labels"):
            topic = settings.topic(name)
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in partitions]
            for tp in consumer.committed(tps, timeout=30):
                end = consumer.get_watermark_offsets(tp, timeout=30)[1]
                lag += end - max(tp.offset, 0)
    finally:
        consumer.close()
    return lag


def test_sigterm_stops_the_worker_cleanly_after_flushing_and_committing(
    isolated: Settings,
) -> None:
    port = free_port()
    proc = worker_process(isolated, "--metrics-port", str(port), "--progress-every", "1")
    wait_for(lambda: http_get(port, "/health")[0] == 200, 90, proc)
    assert json.loads(http_get(port, "/health")[1])["status"] == "ok"

    rid = f"cli-{uuid.uuid4().hex[:8]}"
    event = inference_event().model_copy(update={"request_id": rid, "event_id": f"e-{rid}"})
    label = EMLabel(
        label_id=f"l-{rid}", request_id=rid, labeler_id="a", ts=datetime.now(UTC), verdict=True
    )
    producer = Producer(isolated.kafka.client_config())
    producer.produce(isolated.topic("inference-events"), key=rid.encode(), value=event.to_bytes())
    producer.produce(isolated.topic("em-labels"), key=rid.encode(), value=label.to_bytes())
    assert producer.flush(30) == 0

    client = connect(isolated)
    sql = "SELECT em FROM outcomes FINAL WHERE request_id = %(r)s"
    try:
        wait_for(
            lambda: client.query(sql, parameters={"r": rid}).result_rows == [(True,)], 60, proc
        )
    finally:
        client.close()
    status, metrics = http_get(port, "/metrics")
    assert status == 200 and 'stream_outcomes_total{reason="joined"} 1' in metrics

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "worker stopped cleanly" in output
    assert joiner_lag(isolated) == 0  # the last offsets were committed on the way out


def test_missing_topics_fail_with_one_clear_line(isolated: Settings) -> None:
    prefix = f"none{uuid.uuid4().hex[:6]}."
    settings = isolated.model_copy(
        update={"kafka": isolated.kafka.model_copy(update={"topic_prefix": prefix})}
    )
    proc = worker_process(settings)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "pipeline topics create" in lines[0], output
