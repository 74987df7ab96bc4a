"""The embedded warehouse's insert path: its HTTP endpoint against chdb in-process.

    .venv/bin/python bench/bench_warehouse.py                 # private embedded stack
    .venv/bin/python bench/bench_warehouse.py --stack env     # the warehouse PIPELINE_* names

The same InferenceEvent-shaped rows (``pipeline.warehouse.rows``, the sink's
mapping) go into the ``inference_events`` table of migration 0001, created
in a fresh database on each side: once through clickhouse-connect's
in-process chdb client on a private data path, once through the warehouse
process's ClickHouse HTTP endpoint (what every component uses). Both as one
insert of all rows and in batches of ``--batch`` rows; the two clients run
alternately, ``--repeat`` times, and each figure is the median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Report, add_json_argument, print_figures, stack

from pipeline.config import Settings
from pipeline.warehouse.client import connect
from pipeline.warehouse.migrations import render, split_statements
from pipeline.warehouse.rows import INFERENCE_EVENT_COLUMNS, inference_event_row
from schemas.examples import inference_event

ROOT = Path(__file__).resolve().parents[1]
DDL = ROOT / "infra" / "clickhouse" / "migrations" / "0001_raw_inference_events.sql"


def rows(n: int) -> list[list[Any]]:
    event = inference_event()
    _, template = inference_event_row(event, "inference-events", 0, 0)
    out = []
    for i in range(n):
        row = list(template)
        row[0], row[1], row[-1] = f"e-{i}", f"r-{i}", i  # event_id, request_id, src_offset
        out.append(row)
    return out


def create(client: Any, database: str) -> None:
    for statement in split_statements(DDL.read_text()):
        client.command(render(statement, database))


def rate(client: Any, table: str, data: list[list[Any]], batch: int) -> float:
    """Rows per second inserting ``data`` in batches of ``batch`` rows."""
    client.command(f"TRUNCATE TABLE {table}")
    start = time.perf_counter()
    for i in range(0, len(data), batch):
        client.insert(table, data[i : i + batch], column_names=list(INFERENCE_EVENT_COLUMNS))
    return len(data) / (time.perf_counter() - start)


def measure(settings: Settings, n: int, batch: int, repeat: int) -> dict[str, list[float]]:
    import clickhouse_connect

    data = rows(n)
    db = f"bench_{uuid.uuid4().hex[:10]}"
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-chdb-") as path:
        local = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        http = connect(settings)
        try:
            create(local, db)
            create(http, db)
            clients: dict[str, Callable[[int], float]] = {
                "in-process": lambda b: rate(local, f"{db}.inference_events", data, b),
                "http": lambda b: rate(http, f"{db}.inference_events", data, b),
            }
            for run in clients.values():
                run(len(data) // 10)  # warm up: the engine's first insert pays for its setup
            for _ in range(repeat):
                for size in (n, batch):
                    for name, run in clients.items():
                        got = run(size)
                        results.setdefault(f"{name}/{size}", []).append(got)
                        print(f"  {name:10} batches of {size:>7,}: {got:>9,.0f} rows/s", flush=True)
            query = f"SELECT count() FROM {db}.inference_events"  # noqa: S608  # our uuid name
            (count,) = http.query(query).result_rows[0]
            if count != n:
                msg = f"the warehouse holds {count} rows, expected {n}"
                raise RuntimeError(msg)
        finally:
            http.command(f"DROP DATABASE IF EXISTS {db}")
            http.close()
            local.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stack", choices=["embedded", "env"], default="embedded")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, one round")
    add_json_argument(parser)
    args = parser.parse_args()
    n, repeat = (20_000, 1) if args.quick else (args.rows, args.repeat)
    with stack(args.stack) as settings:
        results = measure(settings, n, args.batch, repeat)
    med = {key: statistics.median(values) for key, values in results.items()}
    command = ".venv/bin/python bench/bench_warehouse.py" + (" --quick" if args.quick else "")
    if args.stack != "embedded":
        command += f" --stack {args.stack}"
    rep = Report("Embedded warehouse insert path", command)
    for size, label in (
        (n, f"one insert of {n:,} rows"),
        (args.batch, f"{args.batch:,}-row batches"),
    ):
        local, http = med[f"in-process/{size}"], med[f"http/{size}"]
        spread = ", ".join(f"{v:,.0f}" for v in results[f"http/{size}"])
        rep.add(f"in-process chdb client, {label}", local, "rows/s")
        rep.add(
            f"warehouse HTTP endpoint, {label}",
            http,
            "rows/s",
            detail=f"{http / local:.2f}x in-process; runs {spread}",
        )
    per_request = args.batch / med[f"http/{args.batch}"] * 1000
    rep.add("HTTP insert of one batch", per_request, "ms", detail=f"{args.batch:,} rows")
    rep.notes.append(
        "In-process is what a single process owning the chdb path could do; every other "
        "process reaches the engine through the warehouse's HTTP endpoint (ADR 001), so "
        "the HTTP figures bound what the stream sink can insert."
    )
    print_figures(rep, name=50, value="12,.1f", unit=6)
    rep.write(args.json)


if __name__ == "__main__":
    main()
