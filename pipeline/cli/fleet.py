"""`pipeline fleet`: every node seen on the ack topic, its version, its refusals, who is behind.

Exit codes: 0 when no node is overdue, 1 when one has been behind the
production version for longer than ``--max-behind``, 2 when Kafka or a
topic cannot be read (one line on stderr).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from pipeline.cli._app import app, console, err_console
from pipeline.config import load_settings
from pipeline.fleet import FleetRow, FleetUnavailableError, FleetView, fleet_view, parse_duration
from pipeline.node.kafka import LOGGER_NAME

UNAVAILABLE = 2


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def fleet(
    since: str = typer.Option("1h", "--since", help="Window of acks to read (90s, 5m, 1h, 2d)."),
    max_behind: str = typer.Option(
        "5m", "--max-behind", help="Exit 1 when a node is behind production for longer than this."
    ),
    timeout: float = typer.Option(15.0, "--timeout", min=0.5, help="Seconds to read each topic."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per node."),
) -> None:
    """Nodes seen on the ack topic: version applied, last refusal, behind production or not."""
    from pipeline.fleet.reader import read_acks, read_publications

    window, allowed = _duration(since), _duration(max_behind)
    settings = load_settings()
    start = datetime.now(UTC) - window
    kafka_log = logging.getLogger(LOGGER_NAME)
    if kafka_log.getEffectiveLevel() >= logging.WARNING:
        # librdkafka's connection failures would precede the one line that says it all.
        kafka_log.setLevel(logging.CRITICAL)
    try:
        published = read_publications(settings.kafka, settings.control.control_topic, timeout)
        log = read_acks(settings.kafka, settings.node.ack_topic, start, timeout)
    except FleetUnavailableError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(UNAVAILABLE) from None
    now = datetime.now(UTC)
    view = fleet_view(log.acks, published, now, max_behind=allowed, since=start)
    if log.malformed:
        err_console.print(f"{log.malformed} records on the ack topic are not acks; skipped")
    if as_json:
        for row in view.rows:
            typer.echo(json.dumps(row.to_json(now)))
    else:
        console.print(_table(view, now, settings.topic(settings.node.ack_topic), window, allowed))
    if not view.ok:
        raise typer.Exit(1)


def _table(
    view: FleetView, now: datetime, topic: str, window: timedelta, allowed: timedelta
) -> Table:
    production = ", ".join(f"{k} v{v}" for k, v in sorted(view.production.items())) or "none"
    title = (
        f"fleet: {len(view.rows)} nodes on {topic} in the last {_age(window)}; "
        f"production {production}; overdue after {_age(allowed)}"
    )
    table = Table(title=title)
    for col in ("node", "policy", "applied", "applied at", "production", "state", "last refusal"):
        table.add_column(col)
    table.add_column("last seen")
    for row in view.rows:
        table.add_row(
            row.node_id,
            row.policy_name,
            "-" if row.version is None else f"v{row.version}",
            _ago(row.applied_at, now),
            "-" if row.production is None else f"v{row.production}",
            _state(row, now),
            _refusal(row, now),
            _ago(row.last_seen, now),
        )
    return table


_COLOURS = {"current": "green", "behind": "yellow", "overdue": "bold red", "unknown": "dim"}


def _state(row: FleetRow, now: datetime) -> str:
    behind = row.behind_for(now)
    text = row.state if behind is None else f"{row.state} for {_age(behind)}"
    return f"[{_COLOURS[row.state]}]{text}[/]"


def _refusal(row: FleetRow, now: datetime) -> str:
    if row.refusal is None:
        return "-"
    other = "" if row.refused_policy == row.policy_name else f"{row.refused_policy} "
    return f"{other}v{row.refused_version} ({_ago(row.refused_at, now)}): {row.refusal}"


def _ago(at: datetime | None, now: datetime) -> str:
    return "-" if at is None else f"{_age(now - at)} ago"


def _age(delta: timedelta) -> str:
    """At most two units, zeros left out: 45s, 5m, 1m30s, 2h05m, 3d."""
    left = max(0, round(delta.total_seconds()))
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (parts and len(parts) < 2):
            parts.append((left // size, unit))
            left %= size
    shown = [f"{n}{u}" for n, u in parts[:2] if n]
    return "".join(shown) or "0s"
