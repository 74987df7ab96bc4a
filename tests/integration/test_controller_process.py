"""`pipeline controller` as operators run it: starts, cycles, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


def test_controller_runs_a_cycle_and_stops_cleanly_on_sigterm(stack_env: dict[str, str]) -> None:
    env = {
        **stack_env,
        "PIPELINE_CONTROL__ALGORITHM": "hmac-sha256",
        "PIPELINE_CONTROL__SIGNING_KEY": "test-signing-key",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "controller"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "optimize:" in line:  # the first cycle ran against ClickHouse and MLflow
                break
        assert any("optimize:" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "controller stopped" in output
    assert "Traceback" not in output
