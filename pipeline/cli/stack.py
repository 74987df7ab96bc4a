"""`pipeline up | down | status | topics`: the embedded stack."""

from __future__ import annotations

import dataclasses
import json

import typer
from rich.table import Table

from pipeline.cli._app import app, console
from pipeline.config import Settings, load_settings
from pipeline.stack import manager
from pipeline.stack.topics import ensure_topics, load_spec, spec_path


@app.command()
def up() -> None:
    """Start the embedded stack (Kafka, ClickHouse on chdb, MLflow) and create the topics."""
    settings = load_settings()
    report = manager.up(settings, on_event=lambda line: console.print(f"  {line}"))
    for name, what in report.items():
        console.print(f"{name}: {what}")
    _print_status(settings)


@app.command()
def down() -> None:
    """Stop exactly the processes `pipeline up` started from this state folder."""
    settings = load_settings()
    for name, what in manager.down(settings).items():
        console.print(f"{name}: {what}")


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per service."),
) -> None:
    """Show each service, up or down, with its URL. Exits 1 when one is down."""
    settings = load_settings()
    if as_json:
        rows = manager.status(settings)
        for row in rows:
            typer.echo(json.dumps(dataclasses.asdict(row)))
        all_up = all(row.up for row in rows)
    else:
        all_up = _print_status(settings)
    if not all_up:
        raise typer.Exit(1)


def _print_status(settings: Settings) -> bool:
    table = Table(title=f"embedded stack ({settings.state_dir})")
    for col in ("service", "state", "url", "pid", "note"):
        table.add_column(col)
    all_up = True
    for row in manager.status(settings):
        all_up &= row.up
        state = "[green]up[/]" if row.up else "[red]down[/]"
        table.add_row(row.name, state, row.url, str(row.pid or "-"), row.detail)
    console.print(table)
    return all_up


topics_app = typer.Typer(help="Kafka topics from infra/kafka/topics.yaml.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def topics_create() -> None:
    """Create the missing topics (idempotent); never alters existing ones."""
    settings = load_settings()
    for name, what in ensure_topics(settings).items():
        console.print(f"{name}: {what}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the topic spec with physical names."""
    settings = load_settings()
    spec = load_spec(spec_path(settings))
    for name, topic in spec.topics.items():
        console.print(f"{settings.topic(name)}: {topic.partitions} partitions {topic.config}")
