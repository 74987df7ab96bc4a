"""The demo's cycle count after the drift, read from the controller's log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipeline.demo.acceptance import cycle_times


def test_only_optimize_lines_after_the_drift_count(tmp_path: Path) -> None:
    log = tmp_path / "controller.log"
    log.write_text(
        "09:50:02 optimize: 0 samples: v1 -> production\n"
        "09:50:10 publish: demo v1: published\n"
        "09:50:37 optimize: 642 samples: v2 -> production\n"
        "a traceback line\n"
        "09:51:14 optimize: 1636 samples: v3 -> production\n"
    )
    drift = datetime(2026, 11, 22, 9, 50, 20, tzinfo=UTC)
    assert cycle_times(log, drift) == [
        datetime(2026, 11, 22, 9, 50, 37, tzinfo=UTC),
        datetime(2026, 11, 22, 9, 51, 14, tzinfo=UTC),
    ]


def test_a_cycle_past_midnight_is_on_the_next_day(tmp_path: Path) -> None:
    log = tmp_path / "controller.log"
    log.write_text("00:00:05 optimize: x\n")
    drift = datetime(2026, 11, 22, 23, 59, 50, tzinfo=UTC)
    assert cycle_times(log, drift) == [datetime(2026, 11, 23, 0, 0, 5, tzinfo=UTC)]
    assert cycle_times(tmp_path / "missing.log", drift) == []
