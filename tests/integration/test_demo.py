"""`pipeline demo` on the real stack: a short run, through the function API.

The demo gets the session stack's settings (private ports, temporary state
folder) with a uuid topic prefix and its own stream app id, so it shares
nothing with other tests. A missing service fails the stack fixture: nothing
here skips.
"""

from __future__ import annotations

import os
import uuid

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


def test_a_short_demo_closes_the_loop_and_leaves_nothing_running(isolated: Settings) -> None:
    stream = isolated.stream.model_copy(update={"app_id": f"demo-{uuid.uuid4().hex[:8]}"})
    settings = isolated.model_copy(update={"stream": stream})
    config = DemoConfig(
        duration_s=75, nodes=2, rate=30, seed=3, period_s=15, window_s=120,
        refresh_s=2, truth_samples=800,
    )  # fmt: skip
    lines: list[str] = []
    result = run_demo(settings, config, on_line=lines.append)

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
    names = {f.name: f.value for f in result.figures}
    assert "saving vs static baseline" in names or "fleet token saving (final third)" in names
    assert any(name.startswith("EM drop") for name in names)
