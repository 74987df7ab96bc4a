"""`pipeline demo` on the real stack: a short run, through the function API.

The demo gets the session stack's settings (private ports, temporary state
folder); it adds its run id to the topic prefix and the worker's app id, so
it shares nothing with other tests. A missing service fails the stack
fixture: nothing here skips.

The run is short but at the demo's rate, so the acceptance figures are
computed on real numbers and asserted: tokens saved, the measured EM drop
within tolerance, the drift figure computed against the post-drift oracle. It starts
cold (no history): the history's cold start is tested in
``tests/unit/test_demo_history.py``; with it, the drifted segment's threshold
is aggressive when the drift comes and its correction waits for the harm
detector (about 80 s at the demo's rate, more cycles than two at this run's
15 s period).
"""

from __future__ import annotations

import os

import pytest

from pipeline.config import Settings
from pipeline.demo import DemoConfig, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_short_demo_closes_the_loop_and_leaves_nothing_running(stack: Settings) -> None:
    config = DemoConfig(
        duration_s=150, nodes=2, rate=150, seed=3, period_s=15, window_s=60,
        refresh_s=3, truth_samples=1500, history=0,
    )  # fmt: skip
    lines: list[str] = []
    result = run_demo(stack, config, on_line=lines.append)

    assert result.stack_started == []  # the fixture's stack was used, not a new one
    assert result.events_in_clickhouse > 0, lines
    assert result.registry.versions >= 1, lines
    assert result.registry.production is not None
    assert result.acked, f"no node acknowledged a version: {lines}"
    assert max(result.acked.values()) >= 1
    assert result.refused == 0

    assert set(result.exit_codes) == {"worker", "controller"}
    assert all(code is not None for code in result.exit_codes.values())
    assert not [name for name, pid in result.child_pids.items() if _alive(pid)]

    assert result.report is not None and result.report.is_file()
    assert (result.report.parent / "report.png").stat().st_size > 1000
    figures = {f.name: f for f in result.figures}
    table = "\n".join(f"{f.name}: {f.value} ({f.against})" for f in result.figures)
    assert figures["served-request saving (estimate)"].ok, table
    for name in ("saving vs static baseline", "saving vs oracle"):
        assert figures[name].value.endswith("x"), table
        assert float(figures[name].value[:-1]) > 0, table
    assert figures["EM drop, measured (final third)"].ok, table
    # Whether and when the drifted segment is made safe again (the target: two
    # cycles) depends on when its harm detector fires: in this 150 s run, from 1 to 4
    # cycles, and once not within the 75 s after the drift. It is a target the demo
    # reports and `make run` measures, not a timed assertion; here the figure must be
    # computed against the post-drift oracle.
    drift = figures["drift corrected (cycles after the drift)"]
    assert drift.value.split()[0].isdigit() or drift.value == "NOT corrected", table
    assert "oracle before -> after" in drift.against, table
