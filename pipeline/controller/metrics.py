"""Counters and gauges of the controller, for ``/metrics`` (Prometheus text format).

The worker's registry (:class:`pipeline.stream.metrics.Metrics`: thread-safe
labelled series) and its HTTP server (:class:`pipeline.stream.health.HealthServer`)
are reused; only the metric names, their help and the rendering of this
process's own metrics are the controller's. What is counted comes from the
results the loop already gets back (cycle, canary check, publisher pass).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from pipeline.stream.metrics import Metrics

HELP: Mapping[str, tuple[str, str]] = {
    "controller_cycles_total": (
        "counter",
        "Optimize cycles run, by status (registered, unchanged, canary_running, failed).",
    ),
    "controller_last_cycle_timestamp_seconds": (
        "gauge",
        "Unix time the last optimize cycle ended, failed or not (0: none yet).",
    ),
    "controller_last_successful_cycle_timestamp_seconds": (
        "gauge",
        "Unix time the last optimize cycle that did not fail ended (0: none yet).",
    ),
    "controller_versions_proposed_total": ("counter", "Proposals registered in MLflow."),
    "controller_versions_approved_total": (
        "counter",
        "Versions the controller moved to production: auto-approved proposals and promoted "
        "canaries, by how (auto_approved, canary_promoted).",
    ),
    "controller_versions_rolled_back_total": ("counter", "Canaries rolled back on a guardrail."),
    "controller_versions_published_total": (
        "counter",
        "Versions the publisher sent to the control topic.",
    ),
    "controller_canary_running": (
        "gauge",
        "1 while a canary serves beside production (as of the last cycle or check).",
    ),
    "controller_checks_total": ("counter", "Canary checks run, by action (or failed)."),
}

_ZERO_FROM_START = frozenset(
    {
        "controller_versions_proposed_total",
        "controller_versions_rolled_back_total",
        "controller_versions_published_total",
    }
)
"""Counters without labels, shown as 0 before their first event (labelled ones appear then)."""


class ControllerMetrics(Metrics):
    """The controller's registry: records what cycles, checks and passes report."""

    def __init__(self) -> None:
        super().__init__()
        self.set("controller_last_cycle_timestamp_seconds", 0)
        self.set("controller_last_successful_cycle_timestamp_seconds", 0)
        self.set("controller_canary_running", 0)

    def cycle(self, status: str | None, route: str | None = None) -> None:
        """One optimize cycle ended with ``status`` (None: it failed)."""
        now = time.time()
        self.inc("controller_cycles_total", status=status or "failed")
        self.set("controller_last_cycle_timestamp_seconds", now)
        if status is None:
            return
        self.set("controller_last_successful_cycle_timestamp_seconds", now)
        if status == "registered":
            self.inc("controller_versions_proposed_total")
            if route == "production":
                self.inc("controller_versions_approved_total", how="auto_approved")
        running = status == "canary_running" or route == "canary"
        self.set("controller_canary_running", 1 if running else 0)

    def check(self, action: str | None) -> None:
        """One canary check ended with ``action`` (None: it failed)."""
        self.inc("controller_checks_total", action=action or "failed")
        if action == "rolled_back":
            self.inc("controller_versions_rolled_back_total")
        elif action == "promoted":
            self.inc("controller_versions_approved_total", how="canary_promoted")
        if action is not None:
            self.set("controller_canary_running", 1 if action == "continue" else 0)

    def published(self, statuses: Iterable[str]) -> None:
        """The statuses of one publisher pass."""
        for status in statuses:
            if status == "published":
                self.inc("controller_versions_published_total")

    def render(self) -> str:
        """The controller's metrics in the Prometheus text exposition format (0.0.4)."""
        lines: list[str] = []
        for name, (kind, text) in sorted(HELP.items()):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            series = self.series(name)
            if not series and name in _ZERO_FROM_START:
                series = {(): 0.0}
            for labels, value in sorted(series.items()):
                shown = ",".join(f'{k}="{v}"' for k, v in labels)
                number = str(int(value)) if float(value).is_integer() else repr(float(value))
                lines.append(f"{name}{{{shown}}} {number}" if shown else f"{name} {number}")
        return "\n".join(lines) + "\n"

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every series of ``name``: labels (sorted pairs) to value."""
        with self._lock:
            return dict(self._values.get(name, {}))
