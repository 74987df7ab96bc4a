"""The migrations rendered for a ClickHouse cluster: pure text, no client.

The migration files are written for one server. With a cluster name
(``PIPELINE_CLICKHOUSE__CLUSTER``) each statement becomes its cluster form:

- every DDL statement runs ``ON CLUSTER '<name>'``;
- a ``*MergeTree`` table ``t`` becomes ``t_local``, a
  ``Replicated*MergeTree`` with the conventional Keeper path
  ``/clickhouse/tables/{shard}/{database}/{table}`` and replica ``{replica}``
  and the file's columns, partitioning, sorting key and settings, plus a
  ``Distributed`` table named ``t`` over it, so writers (the sink) and readers
  (analysts, the controller, the views) keep using the names they know;
- a materialized view reads from and writes to the ``_local`` tables, so each
  shard aggregates the rows it stores and no row crosses the network twice;
- plain views keep reading the ``Distributed`` names, so they see every shard;
- ``ALTER TABLE t`` on columns applies to ``t_local`` and then to ``t``.

Every ``Distributed`` table shards by ``cityHash64(request_id)`` when the
table has that column, else by its sorting key. The key is deterministic, so
a retried batch splits into the same block per shard under the same
``insert_deduplication_token`` and the replicated local table drops it; it
also keeps every version of a request on one shard, so ``FINAL`` and
``ReplacingMergeTree`` collapse them as on one server. A ``non_replicated_``
deduplication window is kept and the same ``replicated_`` window is added,
so a token is remembered as long as on one server.

Statements keep ``{db}`` for :func:`pipeline.warehouse.migrations.render`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pipeline.warehouse.errors import MigrationError

LOCAL_SUFFIX = "_local"
KEEPER_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA = "{replica}"
# The ledger is one replication group across every node of every shard, so any
# node answers which migrations ran.
LEDGER_KEEPER_PATH = "/clickhouse/tables/all/{database}/{table}"
LEDGER_REPLICA = "{shard}-{replica}"
SHARD_COLUMN = "request_id"

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_COMMENTS = re.compile(r"^(?:[ \t]*(?:--[^\n]*)?\n)*")
_NAME = r"\{db\}\.(?P<name>\w+)"
_CREATE_DB = re.compile(r"^CREATE\s+DATABASE\s+(?:IF\s+NOT\s+EXISTS\s+)?\{db\}", re.I)
_CREATE_TABLE = re.compile(r"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _NAME, re.I)
_CREATE_MV = re.compile(r"^CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _NAME, re.I)
_CREATE_VIEW = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _NAME, re.I
)
_ALTER = re.compile(r"^ALTER\s+TABLE\s+" + _NAME, re.I)
_COLUMN_ALTER = re.compile(r"^\s*(?:ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR)\s+COLUMN\b", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<kind>\w*)MergeTree\b", re.I)
_ANY_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>\w+)", re.I)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+(?P<key>\([^()]*\)|\w+)", re.I)
_TO = re.compile(r"\bTO\s+\{db\}\.\w+", re.I)
_TABLE_REF = re.compile(r"\{db\}\.(\w+)\b")
_DEDUP_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\s*=\s*(\d+)", re.I)


def check_cluster(cluster: str) -> str:
    """The cluster name, or an error when it could carry SQL.

    Raises:
        MigrationError: the name is not letters, digits, ``_``, ``.`` and ``-``.
    """
    if not CLUSTER_NAME.match(cluster):
        msg = f"invalid cluster name {cluster!r}: use letters, digits, '_', '.' and '-'"
        raise MigrationError(msg)
    return cluster


def _body(statement: str) -> str:
    """The statement without its leading comment lines."""
    return statement[_COMMENTS.match(statement).end() :]  # type: ignore[union-attr]  # the pattern matches the empty string


def _on(cluster: str) -> str:
    return f" ON CLUSTER '{cluster}'"


def _engine_args(text: str, start: int) -> tuple[str, int]:
    """The engine's argument list after ``start`` (``""`` when it has none), and its end."""
    rest = text[start:]
    stripped = rest.lstrip()
    if not stripped.startswith("("):
        return "", start
    open_at = start + len(rest) - len(stripped)
    depth = 0
    for index in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[open_at + 1 : index].strip(), index + 1
    msg = f"unbalanced parentheses after ENGINE in: {text[:80]!r}"
    raise MigrationError(msg)


def sharding_key(create_table: str) -> str:
    """The Distributed sharding key of a ``CREATE TABLE``: by request, else by sorting key."""
    body = _body(create_table)
    columns = body[body.find("(") : _ANY_ENGINE.search(body).start()]  # type: ignore[union-attr]  # callers pass MergeTree tables
    if re.search(rf"^\s*{SHARD_COLUMN}\s", columns, re.M):
        return f"cityHash64({SHARD_COLUMN})"
    order = _ORDER_BY.search(body)
    if order is None:
        msg = f"table without ORDER BY cannot be sharded: {body[:80]!r}"
        raise MigrationError(msg)
    key = order.group("key")
    return f"cityHash64({key[1:-1] if key.startswith('(') else key})"


def tables(statements: Iterable[str]) -> dict[str, str]:
    """The ``*MergeTree`` tables the statements create, with their sharding keys.

    Raises:
        MigrationError: a table uses another engine, or one already replicated.
    """
    found: dict[str, str] = {}
    for statement in statements:
        body = _body(statement)
        match = _CREATE_TABLE.match(body)
        if match is None:
            continue
        engine = _ANY_ENGINE.search(body)
        name = match.group("name")
        if engine is None or _ENGINE.search(body) is None:
            kind = engine.group("engine") if engine else "no engine"
            msg = f"table {name} uses {kind}: only *MergeTree tables can be rendered for a cluster"
            raise MigrationError(msg)
        if engine.group("engine").lower().startswith("replicated"):
            msg = f"table {name} is already replicated: write migrations for one server"
            raise MigrationError(msg)
        found[name] = sharding_key(body)
    return found


def _replicated(body: str, name: str, cluster: str) -> str:
    """The local table: renamed, on the cluster, its engine replicated, its window kept."""
    engine = _ENGINE.search(body)
    assert engine is not None  # noqa: S101  # tables() checked every table's engine
    args, end = _engine_args(body, engine.end())
    keeper = [f"'{KEEPER_PATH}'", f"'{REPLICA}'"] + ([args] if args else [])
    head = body[: engine.start()] + f"ENGINE = Replicated{engine.group('kind')}MergeTree"
    text = f"{head}({', '.join(keeper)}){body[end:]}"
    window = _DEDUP_WINDOW.search(text)
    if window is not None:
        added = f", replicated_deduplication_window = {window.group(1)}"
        text = text[: window.end()] + added + text[window.end() :]
    table = _CREATE_TABLE.match(text)
    assert table is not None  # noqa: S101  # the head is unchanged
    return text[: table.start("name")] + name + LOCAL_SUFFIX + _on(cluster) + text[table.end() :]


def _locals(text: str, known: Mapping[str, str]) -> str:
    return _TABLE_REF.sub(
        lambda m: f"{{db}}.{m.group(1)}{LOCAL_SUFFIX}" if m.group(1) in known else m.group(0), text
    )


def _after_name(body: str, match: re.Match[str], cluster: str) -> str:
    return body[: match.end()] + _on(cluster) + body[match.end() :]


def for_cluster(statement: str, cluster: str, known: Mapping[str, str]) -> list[str]:
    """One migration statement in its cluster form (one or two statements, ``{db}`` kept).

    ``known`` maps every ``*MergeTree`` table of the migrations (see :func:`tables`)
    to its sharding key.

    Raises:
        MigrationError: a statement the cluster form does not cover.
    """
    check_cluster(cluster)
    body = _body(statement)
    if match := _CREATE_DB.match(body):
        return [_after_name(body, match, cluster)]
    if match := _CREATE_TABLE.match(body):
        name = match.group("name")
        local = f"{name}{LOCAL_SUFFIX}"
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {{db}}.{name}{_on(cluster)} AS {{db}}.{local}\n"
            f"ENGINE = Distributed('{cluster}', '{{db}}', '{local}', {known[name]})"
        )
        return [_replicated(body, name, cluster), distributed]
    if match := _CREATE_MV.match(body):
        if _TO.search(body) is None:
            msg = f"materialized view {match.group('name')} needs TO <table> to run on a cluster"
            raise MigrationError(msg)
        return [
            _after_name(body[: match.end()], match, cluster) + _locals(body[match.end() :], known)
        ]
    if match := _CREATE_VIEW.match(body):
        return [_after_name(body, match, cluster)]
    if match := _ALTER.match(body):
        name, rest = match.group("name"), body[match.end() :]
        if name not in known:
            return [_after_name(body, match, cluster)]
        local = f"ALTER TABLE {{db}}.{name}{LOCAL_SUFFIX}{_on(cluster)}{rest}"
        if _COLUMN_ALTER.match(rest) is None:  # partitions, TTL, keys: the stored data only
            return [local]
        return [local, _after_name(body, match, cluster)]
    msg = f"no cluster form for the statement {body.splitlines()[0][:80]!r}"
    raise MigrationError(msg)


def ledger_ddl(cluster: str) -> str:
    """The migration ledger on every node of the cluster, one replication group."""
    check_cluster(cluster)
    return (
        f"CREATE TABLE IF NOT EXISTS {{db}}.schema_migrations{_on(cluster)} ("
        "version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
        f") ENGINE = ReplicatedMergeTree('{LEDGER_KEEPER_PATH}', '{LEDGER_REPLICA}') "
        "ORDER BY version"
    )
