"""`pipeline demo`: the closed loop end to end on the embedded stack, watched live."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.live import Live
from rich.table import Table

from pipeline.cli._app import app, console
from pipeline.config import load_settings

if TYPE_CHECKING:
    from pipeline.demo.run import DemoResult, Sample

TRACE = typer.Option(
    None, "--trace", help="Replay this trajectory file (pipeline capture) instead of the model."
)
HISTORY = typer.Option(
    1000,
    "--history",
    min=0,
    help="Exploration samples per segment of a simulated history (another seed) that seed "
    "the certificates before live traffic (0: start cold; ignored with --trace).",
)


def live_table(sample: Sample, duration_s: float) -> Table:
    """The live view: fleet counters, versions, acks, canary, per-segment policy."""
    saved = 1 - sample.tokens_generated / sample.tokens_full if sample.tokens_full else 0.0
    events = sample.events_in_clickhouse
    in_ch = "n/a" if events is None else str(events)
    acked = ", ".join(f"v{v}" for v in sorted(set(sample.acked.values()))) or "none yet"
    table = Table(
        title=(
            f"t={sample.t:.0f}/{duration_s:g}s  requests {sample.requests}  "
            f"tokens saved {saved:.1%}  production v{sample.production or 0}  "
            f"acked {acked} ({len(sample.acked)} nodes)  canary {sample.canary}  "
            f"events in ClickHouse {in_ch}"
        ),
        title_justify="left",
    )
    for col in ("segment", "version", "threshold", "events", "exploration"):
        table.add_column(col, justify="left" if col == "segment" else "right")
    for row in sample.segments:
        theta = "-" if row.threshold is None else f"{row.threshold:.2f}"
        table.add_row(row.segment, f"v{row.version}", theta, str(row.events), str(row.exploration))
    return table


def summary(result: DemoResult) -> Table:
    """The closing table: acceptance figures and what ran."""
    stopped = " (interrupted)" if result.interrupted else ""
    table = Table(title=f"demo {result.config.run_id}{stopped}")
    for col in ("figure", "value", "met", "against"):
        table.add_column(col)
    for f in result.figures:
        met = "" if f.ok is None else ("yes" if f.ok else "NO")
        table.add_row(f.name, f.value, met, f.against)
    reg = result.registry
    table.add_row("policy versions registered", str(reg.versions), f"production v{reg.production}")
    acked = sorted(set(result.acked.values()))
    table.add_row(
        "versions acknowledged",
        ", ".join(f"v{v}" for v in acked) or "none",
        f"{len(result.acked)} nodes, {result.refused} refusals",
    )
    table.add_row("events in ClickHouse", str(result.events_in_clickhouse), "")
    table.add_row("children exit codes", str(result.exit_codes), "")
    return table


@app.command("demo")
def demo(
    duration: float = typer.Option(240.0, min=30.0, help="Seconds of traffic (drift halfway)."),
    nodes: int = typer.Option(4, min=1, max=64, help="Simulated inference nodes."),
    rate: float = typer.Option(150.0, min=1.0, help="Requests per second, whole fleet."),
    seed: int = typer.Option(0, help="Seed of the traffic and the ground truth."),
    period: float | None = typer.Option(None, help="Seconds between optimize cycles."),
    canary_share: float = typer.Option(0.0, min=0.0, max=0.5, help="Canary share (0: none)."),
    trace: Path | None = TRACE,
    history: int = HISTORY,
) -> None:
    """Run the closed loop: stack, worker, controller and a drifting simulated fleet.

    With --trace the fleet replays captured real trajectories instead (no drift),
    and the yardsticks are computed on the trace's records.
    """
    from pipeline.demo import DemoConfig, run_demo
    from pipeline.sim.trace import read_trace

    settings = load_settings()
    if trace is not None:
        read_trace(trace)  # a bad file fails here, before any process starts
    config = DemoConfig(duration_s=duration, nodes=nodes, rate=rate, seed=seed,
                        period_s=period, canary_share=canary_share, trace=trace,
                        history=history)  # fmt: skip

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            result = run_demo(
                settings,
                config,
                on_line=lambda line: live.console.print(line, highlight=False),
                on_sample=lambda s: live.update(live_table(s, duration)),
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(summary(result))
    console.print(f"MLflow UI: {settings.mlflow.tracking_uri}  (model "
                  f"{settings.control.model_name(config.policy_name)})")  # fmt: skip
    console.print(f"report: {result.report}")
    if result.stack_started:
        console.print(f"started {', '.join(result.stack_started)}; `pipeline down` stops them")
    if result.interrupted:
        raise typer.Exit(130)
