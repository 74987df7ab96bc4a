"""Migrations for one server (the files as written) and for a cluster (their cluster form)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import ClickHouseSettings, Settings, load_settings, settings_env
from pipeline.errors import ConfigError
from pipeline.warehouse.client import session_settings
from pipeline.warehouse.cluster import KEEPER_PATH, for_cluster, ledger_ddl, tables
from pipeline.warehouse.errors import MigrationError
from pipeline.warehouse.migrations import (
    apply_migrations,
    discover,
    render,
    split_statements,
    statements_to_run,
)

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "migrations"
CLUSTER = "prod"
ON = f"ON CLUSTER '{CLUSTER}'"


class RecordingClient:
    """A clickhouse-connect stand-in that records what the runner sends."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.inserts: list[tuple[str, list[list[Any]]]] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        return type("Result", (), {"result_rows": []})()

    def insert(self, table: str, rows: list[list[Any]], **_: Any) -> None:
        self.inserts.append((table, rows))


def shipped() -> dict[int, list[str]]:
    return statements_to_run(discover(REPO_MIGRATIONS), CLUSTER)


def test_one_server_runs_every_file_exactly_as_written() -> None:
    migrations = discover(REPO_MIGRATIONS)
    rendered = statements_to_run(migrations, None)
    for migration in migrations:
        as_written = split_statements(migration.path.read_text().replace("{db}", "earlystop"))
        assert [render(s, "earlystop") for s in rendered[migration.version]] == as_written


def test_one_server_runner_sends_the_files_statements_and_no_cluster_clause() -> None:
    client = RecordingClient()
    applied = apply_migrations(client, "earlystop", REPO_MIGRATIONS)
    migrations = discover(REPO_MIGRATIONS)
    assert applied == [m.name for m in migrations]
    files = [
        s
        for m in migrations
        for s in split_statements(m.path.read_text().replace("{db}", "earlystop"))
    ]
    assert client.commands[2:] == files
    assert not [c for c in client.commands if "ON CLUSTER" in c or "Replicated" in c]


def test_cluster_runner_creates_the_database_and_ledger_on_the_cluster() -> None:
    client = RecordingClient()
    apply_migrations(client, "earlystop", REPO_MIGRATIONS, cluster=CLUSTER)
    assert client.commands[0] == f"CREATE DATABASE IF NOT EXISTS earlystop {ON}"
    assert client.commands[1] == render(ledger_ddl(CLUSTER), "earlystop")
    assert "ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}'" in client.commands[1]
    assert all(ON in c for c in client.commands)
    assert [table for table, _ in client.inserts] == ["schema_migrations"] * len(client.inserts)


def test_every_cluster_statement_runs_on_the_cluster() -> None:
    statements = [s for run in shipped().values() for s in run]
    assert statements
    for statement in statements:
        head = statement.split("(", 1)[0].split("\n", 1)[0]
        assert ON in head, statement[:120]


def test_each_table_becomes_replicated_local_with_its_keys_and_a_distributed_table() -> None:
    migrations = discover(REPO_MIGRATIONS)
    originals = {
        m.group(1): s
        for mig in migrations
        for s in mig.statements
        if (m := re.search(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", s))
    }
    statements = [s for run in shipped().values() for s in run]
    assert set(tables(s for m in migrations for s in m.statements)) == set(originals)
    for name, original in originals.items():
        local = next(s for s in statements if f"TABLE IF NOT EXISTS {{db}}.{name}_local " in s)
        engine = re.search(r"ENGINE = (\w*)MergeTree(\(([^)]*)\))?", original)
        assert engine is not None
        args = f", {engine.group(3)}" if engine.group(3) else ""
        replicated = f"Replicated{engine.group(1)}MergeTree('{KEEPER_PATH}', '{{replica}}'{args})"
        assert f"ENGINE = {replicated}\n" in local
        for clause in ("ORDER BY", "PARTITION BY"):
            kept = [line for line in original.splitlines() if line.startswith(clause)]
            assert kept == [line for line in local.splitlines() if line.startswith(clause)]
        columns = original[original.index("\n(") : original.index("ENGINE")]
        assert columns == local[local.index("\n(") : local.index("ENGINE")]
        assert "replicated_deduplication_window = 1000" in local
        assert "non_replicated_deduplication_window = 1000" in local
        distributed = next(s for s in statements if f"TABLE IF NOT EXISTS {{db}}.{name} " in s)
        assert f"AS {{db}}.{name}_local" in distributed
        key = "cityHash64(request_id)" if "    request_id " in original else "cityHash64("
        assert f"Distributed('{CLUSTER}', '{{db}}', '{name}_local', {key}" in distributed


def test_materialized_views_read_and_write_local_tables_and_views_read_distributed() -> None:
    statements = [s for run in shipped().values() for s in run]
    views = [s for s in statements if "MATERIALIZED VIEW" in s]
    assert len(views) == 3
    for view in views:
        refs = re.findall(r"\{db\}\.(\w+)", view)
        assert refs[0].endswith("_mv")
        assert refs[1:], view
        assert all(ref.endswith("_local") for ref in refs[1:]), refs
    plain = [s for s in statements if re.match(r"CREATE (OR REPLACE )?VIEW", s)]
    assert plain
    assert not [s for s in plain if "_local" in s]


def test_column_alters_apply_to_the_local_and_the_distributed_table() -> None:
    known = {"outcomes": "cityHash64(request_id)"}
    alter = "ALTER TABLE {db}.outcomes ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 0"
    assert for_cluster(alter, CLUSTER, known) == [
        f"ALTER TABLE {{db}}.outcomes_local {ON} ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 0",
        f"ALTER TABLE {{db}}.outcomes {ON} ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 0",
    ]
    ttl = "ALTER TABLE {db}.outcomes MODIFY TTL toDate(ts) + 30"
    assert for_cluster(ttl, CLUSTER, known) == [
        f"ALTER TABLE {{db}}.outcomes_local {ON} MODIFY TTL toDate(ts) + 30"
    ]


def test_sharding_falls_back_to_the_sorting_key_without_request_id() -> None:
    ddl = (
        "-- a comment\nCREATE TABLE IF NOT EXISTS {db}.t\n(\n    a String,\n    b UInt8\n)\n"
        "ENGINE = MergeTree\nORDER BY (a, b)"
    )
    assert tables([ddl]) == {"t": "cityHash64(a, b)"}
    local, distributed = for_cluster(ddl, CLUSTER, tables([ddl]))
    assert local.startswith(f"CREATE TABLE IF NOT EXISTS {{db}}.t_local {ON}\n(")
    assert f"ENGINE = ReplicatedMergeTree('{KEEPER_PATH}', '{{replica}}')\n" in local
    assert distributed.endswith("Distributed('prod', '{db}', 't_local', cityHash64(a, b))")


@pytest.mark.parametrize(
    ("statements", "match"),
    [
        (["CREATE TABLE {db}.m (a UInt8) ENGINE = Memory"], "only \\*MergeTree"),
        (
            ["CREATE TABLE {db}.r (a UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a"],
            "already replicated",
        ),
        (["CREATE MATERIALIZED VIEW {db}.v ENGINE = MergeTree ORDER BY a AS SELECT 1"], "TO <"),
        (["INSERT INTO {db}.t VALUES (1)"], "no cluster form"),
    ],
)
def test_statements_without_a_cluster_form_are_refused(statements: list[str], match: str) -> None:
    with pytest.raises(MigrationError, match=match):
        known = tables(statements)
        for statement in statements:
            for_cluster(statement, CLUSTER, known)


def test_cluster_names_that_could_carry_sql_are_refused() -> None:
    with pytest.raises(MigrationError, match="invalid cluster name"):
        for_cluster("CREATE DATABASE IF NOT EXISTS {db}", "x' --", {})
    with pytest.raises(ConfigError, match="PIPELINE_CLICKHOUSE__CLUSTER"):
        load_settings(clickhouse={"cluster": "x'; DROP"})


def test_cluster_mode_is_a_setting_and_makes_distributed_inserts_synchronous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().clickhouse.cluster is None
    assert session_settings(ClickHouseSettings()) == {}
    assert "PIPELINE_CLICKHOUSE__CLUSTER" not in settings_env(Settings())
    monkeypatch.setenv("PIPELINE_CLICKHOUSE__CLUSTER", "prod-eu.1")
    settings = Settings()
    assert settings.clickhouse.cluster == "prod-eu.1"
    assert session_settings(settings.clickhouse) == {"insert_distributed_sync": 1}
    assert settings_env(settings)["PIPELINE_CLICKHOUSE__CLUSTER"] == "prod-eu.1"


def test_the_embedded_warehouse_refuses_cluster_mode_naming_the_setting() -> None:
    import threading

    from pipeline.stack.clickhouse.service import serve

    settings = load_settings(clickhouse={"cluster": CLUSTER, "password": "x"})
    with pytest.raises(ConfigError, match="PIPELINE_CLICKHOUSE__CLUSTER: the embedded warehouse"):
        serve(settings, threading.Event())
