"""`pipeline worker`: the stream worker (joiner, dead letters, ClickHouse sink)."""

from __future__ import annotations

import logging
import threading

import typer

from pipeline.cli._app import app, console
from pipeline.config import load_settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.metrics import Metrics
from pipeline.stream.runner import Worker


def _summary(metrics: Metrics) -> str:
    return (
        f"records {metrics.total('stream_records_total'):.0f}, "
        f"outcomes {metrics.total('stream_outcomes_total'):.0f}, "
        f"dead letters {metrics.total('stream_dead_letters_total'):.0f}, "
        f"rows written {metrics.total('sink_rows_total'):.0f}, "
        f"sink retries {metrics.total('sink_retries_total'):.0f}"
    )


def _report_progress(worker: Worker, every_s: float, done: threading.Event) -> None:
    while not worker.ready.wait(0.2):
        if done.is_set():
            return
    console.print(f"worker running ({worker.stream.effective_worker_id()}); SIGTERM stops it")
    while every_s > 0 and not done.wait(every_s):
        console.print(f"  {_summary(worker.metrics)}")


@app.command("worker")
def worker_command(
    sink: bool = typer.Option(
        True, "--sink/--no-sink", help="Also write the topics to ClickHouse in this process."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Serve /metrics and /health on this port."
    ),
    progress_s: float = typer.Option(
        30.0, "--progress-every", help="Print counters every N seconds (0: never)."
    ),
) -> None:
    """Run the stream worker until SIGTERM: join, dead-letter bad input, sink to ClickHouse."""
    settings = load_settings()
    update: dict[str, object] = {"sink_enabled": sink}
    if metrics_port is not None:
        update["metrics_port"] = metrics_port
    stream = StreamSettings.model_validate({**settings.stream.model_dump(), **update})
    logging.getLogger("pipeline.stream").setLevel(logging.INFO)
    worker = Worker(settings, stream)
    done = threading.Event()
    reporter = threading.Thread(
        target=_report_progress, args=(worker, progress_s, done), daemon=True
    )
    reporter.start()
    try:
        worker.run()
    finally:
        done.set()
    console.print(f"worker stopped cleanly: {_summary(worker.metrics)}")
