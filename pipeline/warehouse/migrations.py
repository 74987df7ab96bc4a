"""Versioned DDL migrations, applied in order and recorded in the target database.

Files are ``infra/clickhouse/migrations/NNNN_name.sql``. A statement ends at a
line that ends with ``;``; ``{db}`` stands for the database name, so the same
files serve every environment. Each applied file is recorded in
``{db}.schema_migrations`` with a checksum: re-running applies nothing new,
and editing a file that already ran is an error, because servers that ran the
old text would silently differ from new ones. Put every change in a new file.

ClickHouse DDL is not transactional: a file that fails half way is not
recorded and runs again from its first statement, so write statements that
can run twice (``IF NOT EXISTS``). The runner needs only a clickhouse-connect
client, so it works on the embedded warehouse and on a real server alike.

With a cluster name the same files run in their cluster form
(:mod:`pipeline.warehouse.cluster`: ``ON CLUSTER``, replicated local tables,
``Distributed`` tables under the names clients use); without one they run
exactly as written. The checksum is always the file's.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.warehouse.cluster import check_cluster, for_cluster, ledger_ddl, tables
from pipeline.warehouse.errors import MigrationError

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LEDGER = "schema_migrations"
_LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ("
    "version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
    ") ENGINE = MergeTree ORDER BY version"
)


@dataclass(frozen=True)
class Migration:
    """One migration file, parsed."""

    version: int
    name: str
    """The file name without ``.sql``, e.g. ``0001_raw_inference_events``."""
    path: Path
    checksum: str
    statements: tuple[str, ...]
    """Statements with ``{db}`` still in place."""


def normalize(text: str) -> str:
    """The text a checksum covers: line endings unified, so a CRLF checkout is no change."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def checksum(text: str) -> str:
    """SHA-256 of the normalized file text."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def _is_blank(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())


def split_statements(text: str) -> list[str]:
    """Split a file into statements at lines ending with ``;`` (the ``;`` is dropped).

    A ``--`` comment line never ends a statement; comment-only and blank pieces
    are dropped; a last statement without ``;`` counts.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in normalize(text).split("\n"):
        stripped = line.rstrip()
        if stripped.endswith(";") and not stripped.lstrip().startswith("--"):
            current.append(stripped[:-1])
            statements.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    statements.append("\n".join(current).strip())
    return [s for s in statements if s and not _is_blank(s)]


def render(statement: str, database: str) -> str:
    """Substitute the database name for ``{db}``.

    Raises:
        MigrationError: when the name is not a plain identifier.
    """
    if not _DATABASE.match(database):
        msg = f"invalid database name {database!r}: use letters, digits and underscores"
        raise MigrationError(msg)
    return statement.replace("{db}", database)


def discover(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, in version order.

    Raises:
        MigrationError: for a ``.sql`` file with a bad name, a duplicate version,
            or a file with no statement.
    """
    if not directory.is_dir():
        msg = f"the migrations folder {directory} does not exist (set PIPELINE_INFRA_DIR)"
        raise MigrationError(msg)
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if match is None:
            msg = f"migration file {path} is not named NNNN_name.sql (lower case, underscores)"
            raise MigrationError(msg)
        version = int(match.group(1))
        if version in found:
            other = found[version].path.name
            msg = f"migration files {other} and {path.name} share version {version}"
            raise MigrationError(msg)
        text = path.read_text(encoding="utf-8")
        statements = tuple(split_statements(text))
        if not statements:
            msg = f"migration file {path} holds no statement"
            raise MigrationError(msg)
        found[version] = Migration(version, path.stem, path, checksum(text), statements)
    return [found[v] for v in sorted(found)]


def _applied(client: Any, database: str) -> dict[int, tuple[str, str]]:
    # database was checked by render(); it cannot carry SQL.
    sql = f"SELECT version, name, checksum FROM {database}.{LEDGER} ORDER BY version"  # noqa: S608
    rows = client.query(sql).result_rows
    return {int(version): (str(name), str(digest)) for version, name, digest in rows}


def pending(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones are unchanged.

    Raises:
        MigrationError: naming the file of an applied migration that was edited or renamed.
    """
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            continue
        name, digest = recorded
        if name != migration.name or digest != migration.checksum:
            msg = (
                f"migration {migration.path} changed after it was applied as {name} "
                f"(checksum {digest[:12]}, file now {migration.checksum[:12]}): restore it and "
                f"put the change in a new migration"
            )
            raise MigrationError(msg)
    known = {m.version for m in migrations}
    for version in sorted(set(applied) - known):
        log.warning("the database has migration %04d, which this code does not know", version)
    return [m for m in migrations if m.version not in applied]


def statements_to_run(
    migrations: list[Migration], cluster: str | None = None
) -> dict[int, list[str]]:
    """Each migration's statements as they run, ``{db}`` kept, by version.

    Without a cluster, the files' statements unchanged; with one, their cluster
    form, rendered for every migration before any runs (so a statement with no
    cluster form fails before the first DDL).

    Raises:
        MigrationError: a statement has no cluster form, or the cluster name is invalid.
    """
    if cluster is None:
        return {m.version: list(m.statements) for m in migrations}
    known = tables(s for m in migrations for s in m.statements)
    return {
        m.version: [out for s in m.statements for out in for_cluster(s, cluster, known)]
        for m in migrations
    }


def apply_migrations(
    client: Any, database: str, directory: Path, cluster: str | None = None
) -> list[str]:
    """Apply the pending migrations in order; return the names applied.

    ``cluster`` names the ClickHouse cluster to create everything on; None is
    one server.

    Raises:
        MigrationError: for an invalid or edited file, or a statement the server refused.
    """
    migrations = discover(directory)
    rendered = statements_to_run(migrations, cluster)
    if cluster is None:
        setup = (f"CREATE DATABASE IF NOT EXISTS {database}", _LEDGER_DDL)
    else:
        on = f" ON CLUSTER '{check_cluster(cluster)}'"
        setup = (f"CREATE DATABASE IF NOT EXISTS {database}{on}", ledger_ddl(cluster))
    for ddl in setup:
        client.command(render(ddl, database))
    todo = pending(migrations, _applied(client, database))
    for migration in todo:
        for index, statement in enumerate(rendered[migration.version], start=1):
            try:
                client.command(render(statement, database))
            except Exception as exc:
                msg = f"migration {migration.path} failed at statement {index}: {exc}"
                raise MigrationError(msg) from exc
        client.insert(
            LEDGER,
            [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
            database=database,
        )
        log.info("applied migration %s to %s", migration.name, database)
    return [m.name for m in todo]
