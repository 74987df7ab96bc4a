"""`pipeline optimize` (one cycle) and `pipeline controller` (cycles, publisher, canary monitor)."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pipeline.cli._app import app, console
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.controller.metrics import ControllerMetrics
    from pipeline.stream.health import HealthServer

SPEC = typer.Option(None, "--spec", help="Policy spec YAML (default: controller settings).")


def _spec_path(settings: Settings, spec: Path | None) -> Path:
    from pipeline.controller.config import controller_settings

    return spec or controller_settings(settings).spec_path


def _line(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    console.print(f"[dim]{stamp}[/] {text}", highlight=False)


@app.command("optimize")
def optimize_once(spec: Path | None = SPEC) -> None:
    """Run one optimize cycle: ClickHouse -> optimizer -> MLflow (exit 1 if skipped)."""
    from pipeline.audit import KafkaAuditLog
    from pipeline.controller.cycle import run_cycle
    from pipeline.optimizer import load_spec

    settings = load_settings()
    policy_spec = load_spec(_spec_path(settings, spec))
    audit = KafkaAuditLog(settings.kafka, settings.control.audit_topic)
    try:
        result = run_cycle(settings, policy_spec, audit=audit)
    finally:
        audit.close()
    _line(f"{policy_spec.name}: {result.status}: {result.detail}")


@app.command("controller")
def controller(
    spec: Path | None = SPEC,
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Serve /metrics and /health on this port."
    ),
) -> None:
    """Run optimize cycles, the publisher and the canary monitor until SIGTERM."""
    from pipeline.audit import KafkaAuditLog
    from pipeline.controller.config import controller_settings
    from pipeline.controller.loop import ControlLoop
    from pipeline.controller.metrics import ControllerMetrics
    from pipeline.optimizer import load_spec

    settings = load_settings()
    policy_spec = load_spec(_spec_path(settings, spec))
    _ensure_service_account(settings)
    config = controller_settings(settings)
    metrics = ControllerMetrics()
    server = _serve_metrics(config.metrics_host, metrics_port or config.metrics_port, metrics)
    audit = KafkaAuditLog(settings.kafka, settings.control.audit_topic)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runner = ControlLoop(settings, policy_spec, report=_line, audit=audit, metrics=metrics)
        _line(
            f"controller for {policy_spec.name}: cycles every {config.period_s:g}s, "
            f"canary checks every {config.monitor_interval_s:g}s; SIGTERM stops it"
        )
        runner.run(stop)
    finally:
        audit.close()
        if server is not None:
            server.stop()
    _line("controller stopped")


def _ensure_service_account(settings: Settings) -> None:
    """Create or repair the controller's MLflow service account, given the admin password.

    Compose gives the admin password to the controller only. A failure is one
    line; the cycles then report MLflow refusing them.
    """
    from pipeline.errors import RegistryError, StackError
    from pipeline.stack.mlflow_auth import ensure_service_account

    if settings.mlflow.admin_password is None:
        return
    try:
        _line(ensure_service_account(settings))
    except (StackError, RegistryError) as exc:
        _line(f"MLflow service account not set up: {exc}")


def _serve_metrics(host: str, port: int | None, metrics: ControllerMetrics) -> HealthServer | None:
    from pipeline.stream.health import HealthServer

    if port is None:
        return None
    try:
        server = HealthServer(host, port, metrics, lambda: _health(metrics))
    except OSError as exc:
        msg = f"cannot serve /metrics on {host}:{port} (PIPELINE_CONTROLLER__METRICS_PORT): {exc}"
        raise ConfigError(msg) from None
    server.start()
    _line(f"metrics on http://{host}:{server.port}/metrics")
    return server


def _health(metrics: ControllerMetrics) -> dict[str, object]:
    # The loop reports failures itself and keeps going: alive is healthy.
    last = metrics.get("controller_last_cycle_timestamp_seconds")
    return {"status": "ok", "last_cycle_ts": last or None}
