"""`pipeline sim [truth]`: run the simulated fleet, or print its ground truth."""

from __future__ import annotations

import json
import secrets
import signal
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli._app import app, console
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.node import NodeSettings

sim_app = typer.Typer(
    help="The simulated fleet: nodes, labelers and users on the real broker.",
    invoke_without_command=True,
)
app.add_typer(sim_app, name="sim")

TRACE = typer.Option(
    None, "--trace", help="Replay this trajectory file (pipeline capture) instead of the model."
)


class ScenarioOpt(StrEnum):
    """The built-in scenarios."""

    standard = "standard"
    drift = "drift"
    reasoning = "reasoning"


@sim_app.callback()
def run(
    ctx: typer.Context,
    nodes: int = typer.Option(4, min=1, max=256, help="Simulated inference nodes."),
    rate: float = typer.Option(50.0, min=0.1, help="Requests per second, whole fleet."),
    duration: float = typer.Option(60.0, min=0.0, help="Seconds of traffic."),
    scenario: Annotated[ScenarioOpt, typer.Option(help="Traffic scenario.")] = ScenarioOpt.standard,
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same traffic."),
    drift_at: float | None = typer.Option(
        None, help="Seconds into the run when the drift starts (default: half the duration)."
    ),
    run_id: str | None = typer.Option(
        None, help="Prefix of request ids (default: random, so runs never collide)."
    ),
    linger: float = typer.Option(10.0, min=0.0, help="Seconds to let late labels arrive."),
    trace: Path | None = TRACE,
) -> None:
    """Run NODES simulated nodes at RATE requests/s for DURATION seconds.

    The nodes follow the live policy from the control topic through the node
    SDK and send events, labels and feedback to Kafka. SIGTERM or Ctrl-C
    stops cleanly (producers flushed) and prints the summary. With --trace
    each request replays a resampled captured trajectory (real model
    behaviour) instead of the scenario's simulated one.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.node import Emitter, EmitterSettings, Node
    from pipeline.sim.runner import FleetRunner, RunConfig, RunSummary
    from pipeline.sim.scenario import scenario as build_scenario
    from pipeline.sim.trace import read_trace

    settings = load_settings()
    traces = None if trace is None else read_trace(trace)
    at_s = duration / 2 if drift_at is None else drift_at
    scen = build_scenario(scenario.value, drift_at=int(at_s * rate))
    rid = run_id or f"sim{secrets.token_hex(3)}"
    if not rid.replace("-", "").replace("_", "").isalnum():
        msg = f"--run-id must be letters, digits, '-' or '_', got {rid!r}"
        raise ConfigError(msg)
    config = RunConfig(
        nodes=nodes,
        rate=rate,
        duration_s=duration,
        seed=seed,
        run_id=rid,
        scenario=scen,
        linger_s=linger,
        trace=traces,
    )
    template = _node_template(settings)

    def make_node(i: int) -> Node:
        node_id = f"{rid}-node-{i}"
        node_settings = template.model_copy(
            update={"node_id": node_id, "state_dir": settings.state_dir / "sim" / node_id}
        )
        return Node(settings.kafka, node_settings)

    runner = FleetRunner(
        config,
        make_node,
        Emitter(settings.kafka, EmitterSettings(topic="em-labels")),
        Emitter(settings.kafka, EmitterSettings(topic="user-feedback")),
    )
    previous = signal.signal(signal.SIGTERM, lambda _s, _f: runner.stop())
    drift = f", drift of {scen.drift.segment_key} at {at_s:.0f}s" if scen.drift else ""
    if traces is not None:
        drift = f", replaying {len(traces)} trajectories of {trace}"
    console.print(f"run {rid}: {nodes} nodes, {rate:g} req/s, {duration:g}s, seed {seed}{drift}")
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting nodes", total=max(duration, 1e-9))

        def show(s: RunSummary) -> None:
            progress.update(
                task,
                completed=min(s.elapsed_s, duration),
                description=(
                    f"{s.requests} requests, {s.early_stops} early stops, "
                    f"{s.labels_queued} labels, {s.feedback_queued} feedback, {s.pending} pending"
                ),
            )

        try:
            summary = runner.run(on_progress=show)
        finally:
            signal.signal(signal.SIGTERM, previous)
    table = Table(
        title=f"simulated fleet {rid}" + (" (interrupted)" if summary.interrupted else "")
    )
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in asdict(summary).items():
        table.add_row(name, f"{value:.1f}" if isinstance(value, float) else str(value))
    table.add_row("token_saving", f"{summary.token_saving:.1%}")
    table.add_row("rate", f"{summary.rate:.1f}/s")
    console.print(table)


def _node_template(settings: Settings) -> NodeSettings:
    from pipeline.node import NodeSettings

    # Settings grows a `node` section with the SDK; until then use the SDK's defaults.
    configured = getattr(settings, "node", None)
    if isinstance(configured, NodeSettings):
        return configured
    return NodeSettings(state_dir=settings.state_dir / "node")


@sim_app.command()
def truth(
    epsilon: float = typer.Option(0.02, min=0.0, max=1.0, help="Tolerated EM drop."),
    scenario: Annotated[ScenarioOpt, typer.Option(help="Traffic scenario.")] = ScenarioOpt.standard,
    seed: int = typer.Option(0, help="Seed of the Monte Carlo sample."),
    samples: int = typer.Option(20_000, min=100, help="Requests sampled per segment."),
    min_tokens: int = typer.Option(32, min=0, help="No early stop before this many tokens."),
    budget: int | None = typer.Option(None, min=1, help="Token budget (default: per segment)."),
    before_drift: bool = typer.Option(False, help="Drift scenario: the truth before the drift."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per segment."),
) -> None:
    """Print each segment's oracle threshold and its true EM drop and token saving.

    The oracle is the lowest threshold whose true EM drop, and that of every
    safer threshold, is at most EPSILON (the optimizer's fixed-sequence order).
    """
    from pipeline.sim.oracle import ground_truth
    from pipeline.sim.scenario import scenario as build_scenario

    scen = build_scenario(scenario.value)
    at_index = 0 if before_drift else None
    with Progress(
        TextColumn("{task.description}"), BarColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("sampling", total=len(scen.segments))
        rows = ground_truth(
            scen,
            seed,
            epsilon,
            min_tokens=min_tokens,
            samples=samples,
            at_index=at_index,
            budget=budget,
            on_segment=lambda key: bar.update(task, advance=1, description=key),
        )
    if as_json:
        for row in rows.values():
            record = asdict(row)
            del record["curve"]
            typer.echo(json.dumps(record))
        return
    table = Table(title=f"oracle: {scenario.value}, epsilon {epsilon:g}, {samples} samples/segment")
    for col in ("segment", "threshold", "EM drop", "token saving", "full EM"):
        table.add_column(col, justify="left" if col == "segment" else "right")
    for row in rows.values():
        theta = "none" if row.threshold is None else f"{row.threshold:.2f}"
        saving = f"{row.token_saving:.1%}"
        table.add_row(row.segment_key, theta, f"{row.em_drop:.4f}", saving, f"{row.full_em:.3f}")
    console.print(table)
