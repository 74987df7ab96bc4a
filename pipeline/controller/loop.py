"""The long-running controller: optimize cycles, the publisher thread, the canary monitor.

Failure policy: a cycle or check that fails (a service down, a refused
proposal) is reported in one line and retried at its next period; the
process keeps running. Only a configuration error at start (no signing key,
bad spec) ends it. SIGTERM sets ``stop``: the current step finishes, the
publisher thread flushes its producer, and :meth:`ControlLoop.run` returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pipeline.audit import AuditSink
from pipeline.config import Settings
from pipeline.controller.config import controller_settings
from pipeline.controller.cycle import CycleResult, run_cycle
from pipeline.controller.metrics import ControllerMetrics
from pipeline.controller.monitor import MonitorResult, check_canary
from pipeline.errors import PipelineError
from pipeline.optimizer import PolicySpec
from pipeline.publisher.service import PassResult, Publisher

log = logging.getLogger(__name__)

Report = Callable[[str], None]


class ControlLoop:
    """Runs cycles every ``period_s``, canary checks every ``monitor_interval_s``, and publishes.

    Args:
        settings: All settings; ``control.policies`` is extended with the spec's name.
        spec: The policy spec.
        report: Where progress lines go (the CLI prints them).
        audit: Audit sink for registry moves and publications.
        metrics: Where cycles, checks and publications are counted (for ``/metrics``).
    """

    def __init__(
        self,
        settings: Settings,
        spec: PolicySpec,
        *,
        report: Report | None = None,
        audit: AuditSink | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        watched = ",".join(dict.fromkeys([*settings.control.policy_names(), spec.name]))
        control = settings.control.model_copy(update={"policies": watched})
        self._settings = settings.model_copy(update={"control": control})
        self._spec = spec
        self._config = controller_settings(settings)
        self._report = report or (lambda line: log.info("%s", line))
        self._audit = audit
        self._metrics = metrics
        self._publisher = Publisher(settings.kafka, settings.mlflow, control, audit=audit)
        self._last_error: dict[str, str] = {}

    def cycle(self) -> None:
        """One optimize cycle; a failure is reported, not raised."""

        def count(result: object | None) -> None:
            if self._metrics is not None:
                done = result if isinstance(result, CycleResult) else None
                if done is not None:
                    self._metrics.cycle(done.status, done.route)
                else:
                    self._metrics.cycle(None)

        self._step(
            "optimize", lambda: run_cycle(self._settings, self._spec, audit=self._audit), count
        )

    def check(self) -> None:
        """One canary check; a failure is reported, not raised."""

        def count(result: object | None) -> None:
            if self._metrics is not None:
                self._metrics.check(result.action if isinstance(result, MonitorResult) else None)

        self._step(
            "canary", lambda: check_canary(self._settings, self._spec, audit=self._audit), count
        )

    def _step(
        self,
        name: str,
        step: Callable[[], object],
        count: Callable[[object | None], None] = lambda _: None,
    ) -> object | None:
        """Run one step; its result, or None when it failed (reported, not raised).

        ``count`` records the outcome in the metrics before it is reported, so a
        reported line always has its metric behind it.
        """
        try:
            result = step()
        except PipelineError as exc:
            count(None)
            self._fail(name, f"{exc}; retrying next period")
            return None
        except Exception as exc:  # noqa: BLE001  # a bug in one step must not end the loop
            log.exception("%s step failed", name)
            count(None)
            self._fail(name, f"{type(exc).__name__}: {exc}; retrying next period")
            return None
        count(result)
        self._last_error.pop(name, None)
        detail = getattr(result, "detail", str(result))
        if name == "optimize" or getattr(result, "action", "") != "idle":
            self._report(f"{name}: {detail}")
        return result

    def _fail(self, name: str, line: str) -> None:
        if self._last_error.get(name) != line:  # once per distinct failure, not every period
            self._last_error[name] = line
            self._report(f"{name}: skipped: {line}")

    def _published(self, outcomes: list[PassResult]) -> None:
        if self._metrics is not None:
            self._metrics.published(o.status for o in outcomes)
        for o in outcomes:
            if o.status in {"published", "refused"}:
                self._report(f"publish: {o.policy_name} v{o.version}: {o.status}: {o.detail}")

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        thread = threading.Thread(
            target=self._publisher.run, args=(stop, self._published), name="publisher", daemon=True
        )
        thread.start()
        next_cycle = next_check = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_check:
                    self.check()
                    next_check = time.monotonic() + self._config.monitor_interval_s
                if now >= next_cycle:
                    self.cycle()
                    next_cycle = time.monotonic() + self._config.period_s
                stop.wait(max(0.0, min(next_check, next_cycle) - time.monotonic()))
        finally:
            stop.set()
            thread.join(timeout=self._settings.control.publish_timeout_s + 5)
            self._publisher.close()
