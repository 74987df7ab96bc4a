"""`pipeline migrate | sql`: the ClickHouse schema and ad-hoc queries."""

from __future__ import annotations

import sys

import typer

from pipeline.cli._app import app, console
from pipeline.config import load_settings


@app.command()
def migrate() -> None:
    """Apply the ClickHouse migrations to the configured server or cluster (idempotent)."""
    from pipeline.stack.clickhouse.service import migrations_dir
    from pipeline.warehouse.client import connect
    from pipeline.warehouse.migrations import apply_migrations

    settings = load_settings()
    # The database may not exist yet: connect to `default`, the migrations create it.
    client = connect(settings, database="default")
    try:
        applied = apply_migrations(
            client,
            settings.clickhouse.database,
            migrations_dir(settings),
            cluster=settings.clickhouse.cluster,
        )
    finally:
        client.close()
    where = f" on cluster {settings.clickhouse.cluster}" if settings.clickhouse.cluster else ""
    console.print(
        f"applied {len(applied)} migration(s){where}: {', '.join(applied) or 'none pending'}"
    )


@app.command()
def sql(
    query: str = typer.Argument(..., help="One SQL statement; runs read-only."),
    fmt: str = typer.Option("PrettyCompactMonoBlock", "--format", help="ClickHouse output format."),
) -> None:
    """Run an ad-hoc read-only query against ClickHouse and print the result."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    from pipeline.errors import WarehouseError
    from pipeline.warehouse.client import connect

    settings = load_settings()
    client = connect(settings)
    try:
        # readonly=1 makes the engine refuse writes, DDL and settings changes.
        out = client.raw_query(query, settings={"readonly": 1}, fmt=fmt)
    except DatabaseError as exc:
        first = str(exc).split("server response: ", 1)[-1].splitlines()[0]
        raise WarehouseError(first) from None
    finally:
        client.close()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
