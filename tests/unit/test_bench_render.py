"""BENCHMARKS.md rendering from the scripts' JSON (bench/_render.py, bench/run.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import _render  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = run  # dataclasses look their module up while it loads
_spec.loader.exec_module(run)

MACHINE = _render.Machine(
    cpu="Test CPU 9000",
    cores=2,
    ram_gib=23.5,
    python="3.11.7",
    kernel="6.1.0",
    date="2026-11-22 10:00 UTC",
    commit="abc1234",
    load="0.50, 0.40, 0.30",
)


def node_json() -> dict[str, Any]:
    report = _common.Report("Node SDK hot paths", ".venv/bin/python bench/bench_node.py")
    report.add("dict lookup d[k] (baseline)", 36.04, "ns")
    report.add("should_stop / d[k]", 4.03, "x", goal="<= 3x", met=False, detail="145 ns | 1.97x")
    report.add("emit(event)", 4.04, "us", goal="<= 10 us", met=True, detail="p99 7.58 us")
    report.add("unmeasured", math.nan, "ms")
    report.notes.append("Why 3x is not met: a method call costs two subscripts.")
    return json.loads(json.dumps(report.to_json()))  # what run.py reads back


def sections() -> list[_render.Section]:
    return [
        _render.Section("node", "Node SDK hot paths", "ok", "bench_node.py", data=node_json()),
        _render.Section(
            "control",
            "Control propagation",
            "failed",
            ".venv/bin/python bench/bench_control.py",
            error="exit code 1\n\nTraceback (most recent call last):\nRuntimeError: no broker",
            seconds=12.0,
        ),
        _render.Section("soak", "Soak", "missing", "bench_soak.py", error="not written yet."),
        _render.Section("quality", "Decision quality", "not run", "bench_quality.py"),
    ]


def test_the_contract_writes_nan_as_null() -> None:
    data = node_json()
    assert [f["value"] for f in data["figures"]][-1] is None
    assert set(data) == {"section", "command", "figures", "notes"}
    assert set(data["figures"][0]) == {"name", "value", "unit", "goal", "met", "detail"}


def test_figures_render_with_goal_and_verdict_beside_them() -> None:
    text = _render.render(sections(), MACHINE, {}, command="bench/run.py")
    lines = text.splitlines()
    assert "| should_stop / d[k] | 4.03x | <= 3x | **not met** | 145 ns \\| 1.97x |" in lines
    assert "| emit(event) | 4.04 us | <= 10 us | **met** | p99 7.58 us |" in lines
    assert "| dict lookup d[k] (baseline) | 36.0 ns |  |  |  |" in lines
    assert "| unmeasured | n/a |  |  |  |" in lines
    assert "Why 3x is not met: a method call costs two subscripts." in lines
    assert "Run alone: `.venv/bin/python bench/bench_node.py`" not in lines  # its own command
    assert "Run alone: `bench_node.py`" in lines


def test_header_names_machine_date_and_commit() -> None:
    text = _render.render(sections(), MACHINE, {}, command="bench/run.py --quick", quick=True)
    assert "Test CPU 9000, 2 cores, 23.5 GiB RAM, Python 3.11.7, Linux 6.1.0" in text
    assert "on 2026-11-22 10:00 UTC, commit abc1234" in text
    assert "**Quick smoke run**" in text


def test_summary_counts_goals_and_flags_failures() -> None:
    lines = _render.render(sections(), MACHINE, {}, command="x").splitlines()
    assert "| [Node SDK hot paths](#node-sdk-hot-paths) | ran | 1 of 2 |  |" in lines
    assert "| [Control propagation](#control-propagation) | **failed** |  | 12 s |" in lines
    assert "| [Soak](#soak) | **missing** |  |  |" in lines


def test_a_failed_section_shows_its_error_tail() -> None:
    text = _render.render(sections(), MACHINE, {}, command="x")
    control = text.split("## Control propagation", 1)[1].split("\n## ", 1)[0]
    assert "**Failed**, no figures this run:" in control
    assert "RuntimeError: no broker" in control
    assert "| figure |" not in control
    assert "**Missing**: not written yet." in text
    assert "**Not run**" in text


def test_preserved_blocks_survive_a_rewrite() -> None:
    preserved = {"node": "### Why\n\nHand-written | text.", "sim": "### Fleet\n\nmeasured by hand"}
    first = _render.render(sections(), MACHINE, preserved, command="x")
    assert _render.preserved_blocks(first) == preserved
    again = _render.render(sections(), MACHINE, _render.preserved_blocks(first), command="x")
    assert again == first
    node = first.split("## Node SDK hot paths", 1)[1].split("\n## ", 1)[0]
    assert "Hand-written | text." in node  # at the end of its own section
    other = first.split("## Other measurements", 1)[1]
    assert "measured by hand" in other


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (52262.4, "rec/s", "52,262 rec/s"),
        (152.54, "ms", "153 ms"),
        (12.34, "%", "12.3%"),
        (0.0123, "us", "0.0123 us"),
        (3.0, "x", "3.00x"),
        (None, "ms", "n/a"),
        (40.0, "acks", "40 acks"),
    ],
)
def test_values_are_rounded_for_reading(value: float | None, unit: str, shown: str) -> None:
    assert _render.fmt_value(value, unit) == shown


def test_the_runner_refuses_json_outside_the_contract() -> None:
    good = node_json()
    assert run._valid(good)["section"] == "Node SDK hot paths"
    for bad in ({"section": "x"}, [1], {**good, "figures": [{"name": "a", "unit": "s"}]}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            run._valid(bad)


def test_a_missing_script_is_a_missing_section(tmp_path: Path) -> None:
    bench = run.Bench("nope", "bench_does_not_exist.py", "Nope")
    section = run.run_one(bench, quick=True, stack="embedded", results=tmp_path)
    assert section.status == "missing"
    assert "bench_does_not_exist.py" in section.error
