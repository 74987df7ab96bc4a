"""Migration files: discovery, statement splitting, checksums, the pending check."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.warehouse.errors import MigrationError
from pipeline.warehouse.migrations import (
    checksum,
    discover,
    pending,
    render,
    split_statements,
)

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "migrations"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_statements_split_at_semicolons_that_end_a_line() -> None:
    text = (
        "-- a comment about the file;\n"
        "CREATE DATABASE IF NOT EXISTS {db};\n"
        "\n"
        "CREATE TABLE {db}.t (\n"
        "  s String DEFAULT 'a;b' -- a ; inside a line does not split\n"
        ") ENGINE = Memory;   \n"
        "-- trailing comment only\n"
    )
    assert split_statements(text) == [
        "-- a comment about the file;\nCREATE DATABASE IF NOT EXISTS {db}",
        "CREATE TABLE {db}.t (\n  s String DEFAULT 'a;b' -- a ; inside a line does not split\n"
        ") ENGINE = Memory",
    ]


def test_a_last_statement_without_semicolon_counts() -> None:
    assert split_statements("SELECT 1;\nSELECT 2\n") == ["SELECT 1", "SELECT 2"]


def test_blank_and_comment_only_files_hold_no_statement() -> None:
    assert split_statements("\n-- nothing here\n;\n") == []


def test_checksum_ignores_line_ending_style_but_not_content() -> None:
    assert checksum("A;\nB;\n") == checksum("A;\r\nB;\r\n")
    assert checksum("A;\nB;\n") != checksum("A;\nC;\n")


def test_render_substitutes_the_database_and_refuses_unsafe_names() -> None:
    assert render("CREATE TABLE {db}.t", "earlystop") == "CREATE TABLE earlystop.t"
    with pytest.raises(MigrationError, match="invalid database name"):
        render("CREATE TABLE {db}.t", "x; DROP DATABASE y")


def test_discover_orders_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    write(tmp_path, "0002_second.sql", "SELECT 2;\n")
    write(tmp_path, "0001_first.sql", "SELECT 1;\n")
    write(tmp_path, "README.md", "not a migration")
    found = discover(tmp_path)
    assert [(m.version, m.name) for m in found] == [(1, "0001_first"), (2, "0002_second")]
    assert found[0].statements == ("SELECT 1",)
    assert found[0].checksum == checksum("SELECT 1;\n")


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "x.sql"])
def test_discover_refuses_badly_named_sql_files(tmp_path: Path, name: str) -> None:
    write(tmp_path, name, "SELECT 1;\n")
    with pytest.raises(MigrationError, match=name.replace(".", r"\.")):
        discover(tmp_path)


def test_discover_refuses_duplicate_versions(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "SELECT 1;\n")
    write(tmp_path, "0001_b.sql", "SELECT 1;\n")
    with pytest.raises(MigrationError, match="share version 1"):
        discover(tmp_path)


def test_discover_refuses_empty_files_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nope")
    write(tmp_path, "0001_empty.sql", "-- nothing\n")
    with pytest.raises(MigrationError, match="0001_empty.sql holds no statement"):
        discover(tmp_path)


def test_pending_skips_applied_and_names_an_edited_file(tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "SELECT 1;\n")
    write(tmp_path, "0002_second.sql", "SELECT 2;\n")
    found = discover(tmp_path)
    applied = {1: ("0001_first", checksum("SELECT 1;\n"))}
    assert [m.name for m in pending(found, applied)] == ["0002_second"]
    assert pending(found, {**applied, 2: ("0002_second", found[1].checksum)}) == []
    edited = {1: ("0001_first", checksum("SELECT 0;\n"))}
    with pytest.raises(MigrationError, match=r"0001_first\.sql changed after it was applied"):
        pending(found, edited)
    renamed = {1: ("0001_old_name", found[0].checksum)}
    with pytest.raises(MigrationError, match="applied as 0001_old_name"):
        pending(found, renamed)


def test_the_shipped_migrations_parse() -> None:
    found = discover(REPO_MIGRATIONS)
    assert found[0].name == "0001_raw_inference_events"
    ddl = " ".join(found[0].statements)
    assert "{db}.inference_events" in ddl
    assert "ReplacingMergeTree" in ddl
    assert "ORDER BY (tenant, task, request_id, event_id)" in ddl
