"""`pipeline worker` as a process: health, metrics, a clean SIGTERM, clear failures."""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from pipeline.config import Settings
from tests.integration._stream import joiner_lag, send_verdict_request
from tests.integration.support import (
    cli_process,
    eventually,
    free_port,
    http_get,
    query,
    with_prefix,
)

pytestmark = pytest.mark.integration


def test_sigterm_stops_the_worker_cleanly_after_flushing_and_committing(
    isolated: Settings,
) -> None:
    port = free_port()
    proc = cli_process(isolated, "worker", "--metrics-port", str(port), "--progress-every", "1")
    eventually(lambda: http_get(port, "/health")[0] == 200, 90, "/health to answer", process=proc)
    assert json.loads(http_get(port, "/health")[1])["status"] == "ok"

    rid = send_verdict_request(isolated, "cli")
    sql = "SELECT em FROM outcomes FINAL WHERE request_id = %(r)s"
    eventually(lambda: query(isolated, sql, r=rid) == [(True,)], 60, f"{rid} joined", process=proc)
    status, metrics = http_get(port, "/metrics")
    assert status == 200 and 'stream_outcomes_total{reason="joined"} 1' in metrics

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "worker stopped cleanly" in output
    assert joiner_lag(isolated) == 0  # the last offsets were committed on the way out


def test_missing_topics_fail_with_one_clear_line(isolated: Settings) -> None:
    prefix = f"none{uuid.uuid4().hex[:6]}."
    proc = cli_process(with_prefix(isolated, prefix), "worker")
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "pipeline topics create" in lines[0], output
