"""bench/run.py end to end: node and control benchmarks on the session stack into a temp file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def rows(section: str) -> dict[str, list[str]]:
    """Figure name -> the other cells of its table row."""
    found = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| figure", "| ---")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            found[cells[0]] = cells[1:]
    return found


def test_quick_run_of_node_and_control_writes_their_tables(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    out, results = tmp_path / "BENCHMARKS.md", tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--quick",
            "--only",
            "node",
            "control",
            "--stack",
            "env",
            "--out",
            str(out),
            "--results",
            str(results),
        ],  # fmt: skip
        cwd=ROOT,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert "| [Node SDK hot paths](#node-sdk-hot-paths) | ran |" in text
    assert "**Quick smoke run**" in text

    node = rows(text.split("## Node SDK hot paths", 1)[1].split("\n## ", 1)[0])
    value, goal, met, _ = node["should_stop(plan, t, c) / d[k]"]
    assert value.endswith("x") and float(value[:-1]) > 1.0  # a call is dearer than a subscript
    assert goal == "<= 3x" and met in {"**met**", "**not met**"}
    assert node["emit(event) (serialises)"][1] == "<= 10 us"

    control = text.split("## Control propagation", 1)[1].split("\n## ", 1)[0]
    figures = rows(control)
    value, goal, met, _ = figures["publish -> ACK seen, p99"]
    assert goal == "< 250 ms" and met in {"**met**", "**not met**"}
    assert 0 < float(value.split()[0].replace(",", "")) < 60_000
    # Every one of the 20 nodes acked each of the 2 measured versions, and none refused.
    acks = figures["ACKs received (applied)"]
    assert acks[:3] == ["40 acks", "= 40 (20 nodes x 2 versions)", "**met**"]
    assert "Run alone: `.venv/bin/python bench/bench_control.py --quick --stack env`" in control

    # Sections not selected are listed, not dropped; every result is kept for the next run.
    assert "| [Decision quality against the oracle]" in text
    saved = json.loads((results / "control.json").read_text())
    assert saved["status"] == "ok" and saved["data"]["figures"]
