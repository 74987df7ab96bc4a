"""`pipeline smoke`: one event through Kafka, the contract, ClickHouse and MLflow."""

from __future__ import annotations

from pipeline.cli._app import app, console
from pipeline.config import load_settings


@app.command()
def smoke() -> None:
    """Run the smoke round trip against the running stack and print what happened."""
    from pipeline.smoke import run_smoke

    settings = load_settings()
    report = run_smoke(
        settings, on_step=lambda name, what: console.print(f"[green]ok[/] {name:<10} {what}")
    )
    console.print(f"round trip of {report.request_id} complete: {len(report.steps)} steps")
