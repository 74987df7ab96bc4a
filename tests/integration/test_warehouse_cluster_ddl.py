"""The cluster form of every migration, read by ClickHouse's own parser (chdb's ``formatQuery``).

No cluster runs here (no Keeper, no ``remote_servers``): what is checked is that
each statement is valid ClickHouse SQL, and that ClickHouse reads each local
table with the same columns, partitioning and sorting key as the file's
one-server table. Applying the one-server form is covered by
``test_warehouse_server.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.stack.clickhouse.protocol import quote_literal
from pipeline.warehouse.cluster import ledger_ddl
from pipeline.warehouse.migrations import discover, render, statements_to_run

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "migrations"
CLUSTER = "prod"
DB = "earlystop"


def parsed(statement: str) -> str:
    """ClickHouse's canonical text of one statement; raises when it does not parse."""
    import chdb

    result = chdb.query(f"SELECT formatQuery({quote_literal(statement)})", "TSVRaw")
    return str(result.bytes().decode()).strip()


def cluster_statements() -> list[str]:
    runs = statements_to_run(discover(MIGRATIONS), CLUSTER)
    return [render(s, DB) for run in runs.values() for s in run]


def test_the_parser_refuses_what_is_not_sql() -> None:
    with pytest.raises(Exception, match="Syntax error"):
        parsed("CREATE TABLE ON CLUSTER x ENGINE")


def test_every_cluster_statement_parses() -> None:
    statements = cluster_statements() + [render(ledger_ddl(CLUSTER), DB)]
    assert len(statements) > sum(len(m.statements) for m in discover(MIGRATIONS))
    for statement in statements:
        text = parsed(statement)
        assert f"ON CLUSTER {CLUSTER}" in text, text[:200]


def test_clickhouse_reads_local_tables_as_the_files_tables() -> None:
    one_server = {
        s.split(f"{DB}.", 1)[1].split()[0]: parsed(s)
        for m in discover(MIGRATIONS)
        for s in (render(x, DB) for x in m.statements)
        if s.lstrip("-").find("CREATE TABLE") >= 0 and "ENGINE" in s
    }
    locals_ = {
        s.split(f"{DB}.", 1)[1].split()[0].removesuffix("_local"): parsed(s)
        for s in cluster_statements()
        if "_local ON CLUSTER" in s and s.lstrip().startswith("CREATE TABLE")
    }
    assert set(one_server) == set(locals_)
    assert len(one_server) == 7
    for name, single in one_server.items():
        local = locals_[name]
        keep = [line for line in single.splitlines()[1:] if not line.startswith(("ENGINE", "SET"))]
        assert keep == [
            line for line in local.splitlines()[1:] if not line.startswith(("ENGINE", "SET"))
        ]
        settings = next(line for line in single.splitlines() if line.startswith("SETTINGS"))
        assert f"{settings}, replicated_deduplication_window = 1000" in local.splitlines()
        engine = next(line for line in local.splitlines() if line.startswith("ENGINE"))
        assert engine.startswith("ENGINE = Replicated")
        assert "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'" in engine


def test_distributed_tables_shard_by_request_where_they_can() -> None:
    distributed = {
        s.split(f"{DB}.", 1)[1].split()[0]: parsed(s)
        for s in cluster_statements()
        if "ENGINE = Distributed" in s
    }
    assert set(distributed) >= {
        "inference_events",
        "outcomes",
        "trajectory_points",
        "user_feedback",
    }
    for name in ("inference_events", "outcomes", "trajectory_points", "user_feedback"):
        text = distributed[name]
        assert f"AS {DB}.{name}_local" in text
        assert f"Distributed('{CLUSTER}', '{DB}', '{name}_local', cityHash64(request_id))" in text
