"""The controller's /metrics: what cycles, canary checks and publisher passes count."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.controller import loop
from pipeline.controller.cycle import CycleResult
from pipeline.controller.loop import ControlLoop
from pipeline.controller.metrics import ControllerMetrics
from pipeline.controller.monitor import MonitorResult
from pipeline.errors import RegistryError
from pipeline.optimizer import load_spec
from pipeline.publisher.service import PassResult

SPEC = Path(__file__).resolve().parents[2] / "policies" / "earlystop.yaml"


def sample(text: str, series: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(f"{series} ")]
    return float(line.rsplit(" ", 1)[1])


def test_before_any_cycle_the_counters_are_zero_and_typed() -> None:
    text = ControllerMetrics().render()

    assert "# TYPE controller_versions_proposed_total counter" in text
    assert "# TYPE controller_canary_running gauge" in text
    assert sample(text, "controller_versions_proposed_total") == 0
    assert sample(text, "controller_last_cycle_timestamp_seconds") == 0
    assert sample(text, "controller_canary_running") == 0
    assert "stream_" not in text  # the worker's metrics are not the controller's


def test_cycles_checks_and_passes_are_counted() -> None:
    metrics = ControllerMetrics()
    before = time.time()

    metrics.cycle("registered", "production")
    metrics.cycle("registered", "canary")
    metrics.check("continue")
    mid = metrics.render()
    metrics.check("rolled_back")
    metrics.cycle("registered", "pending")
    metrics.cycle(None)
    metrics.cycle("canary_running")
    metrics.check("promoted")
    metrics.published(["published", "up_to_date", "published", "error"])
    text = metrics.render()

    assert sample(mid, "controller_canary_running") == 1
    assert sample(text, 'controller_cycles_total{status="registered"}') == 3
    assert sample(text, 'controller_cycles_total{status="failed"}') == 1
    assert sample(text, 'controller_cycles_total{status="canary_running"}') == 1
    assert sample(text, "controller_versions_proposed_total") == 3
    assert sample(text, 'controller_versions_approved_total{how="auto_approved"}') == 1
    assert sample(text, 'controller_versions_approved_total{how="canary_promoted"}') == 1
    assert sample(text, "controller_versions_rolled_back_total") == 1
    assert sample(text, "controller_versions_published_total") == 2
    assert sample(text, 'controller_checks_total{action="continue"}') == 1
    assert sample(text, "controller_canary_running") == 0  # promoted
    last = sample(text, "controller_last_cycle_timestamp_seconds")
    assert before <= sample(text, "controller_last_successful_cycle_timestamp_seconds") <= last


def test_the_loop_feeds_the_metrics_from_what_each_step_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(
        control={"algorithm": "hmac-sha256", "signing_key": "k"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
    )
    metrics = ControllerMetrics()
    runner = ControlLoop(settings, load_spec(SPEC), report=lambda _: None, metrics=metrics)
    results: list[object] = [
        CycleResult("registered", "proposal v3", version=3, route="canary"),
        RegistryError("MLflow is not reachable"),
    ]

    def cycle(*_: object, **__: object) -> object:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(loop, "run_cycle", cycle)
    monkeypatch.setattr(loop, "check_canary", lambda *_, **__: MonitorResult("rolled_back", "x"))
    runner.cycle()
    assert metrics.get("controller_canary_running") == 1
    runner.cycle()
    runner.check()
    runner._published([PassResult("default", "published", 4, "sent")])

    assert metrics.get("controller_cycles_total", status="registered") == 1
    assert metrics.get("controller_cycles_total", status="failed") == 1
    assert metrics.get("controller_versions_rolled_back_total") == 1
    assert metrics.get("controller_versions_published_total") == 1
    assert metrics.get("controller_canary_running") == 0
