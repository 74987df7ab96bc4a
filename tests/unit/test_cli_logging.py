"""PIPELINE_LOG_LEVEL: a bad value is one clear line; a good one reaches the libraries' loggers."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(level: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIPELINE_LOG_LEVEL": level}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_an_unknown_log_level_is_refused_in_one_line() -> None:
    done = run_cli("LOUD", "--help")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: PIPELINE_LOG_LEVEL='LOUD' is not a log level (try INFO)"
    ]


def test_a_known_log_level_in_any_case_is_accepted() -> None:
    done = run_cli("info", "--help")
    assert done.returncode == 0, done.stderr
    assert "worker" in done.stdout
