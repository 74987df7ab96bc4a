"""`pipeline controller --metrics-port`: /metrics counts the cycles it ran."""

from __future__ import annotations

import signal
import time

import pytest

from pipeline.config import Settings
from tests.integration.support import cli_process, free_port, http_get, parse_metrics

pytestmark = pytest.mark.integration


def test_metrics_count_cycles_and_say_when_the_last_one_ended(stack: Settings) -> None:
    port = free_port()
    env = {"PIPELINE_CONTROL__ALGORITHM": "hmac-sha256", "PIPELINE_CONTROL__SIGNING_KEY": "k"}
    started = time.time()
    proc = cli_process(stack, "controller", "--metrics-port", str(port), env=env)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "optimize:" in line:  # the first cycle ended
                break
        assert any("optimize:" in line for line in lines), "".join(lines)
        assert any(f"metrics on http://127.0.0.1:{port}/metrics" in line for line in lines)
        status, body = http_get(port, "/metrics")
        health_status, health = http_get(port, "/health")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status == 200, body
    values = parse_metrics(body)
    assert values["controller_cycles_total"] >= 1, body
    assert values["controller_last_cycle_timestamp_seconds"] >= started
    assert "controller_versions_proposed_total" in values
    assert "controller_canary_running" in values
    assert "# TYPE controller_versions_rolled_back_total counter" in body
    assert health_status == 200 and '"status": "ok"' in health
    assert proc.returncode == 0, "".join(lines) + rest
