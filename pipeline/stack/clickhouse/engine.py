"""The chdb engine behind the warehouse endpoint.

One base connection keeps the embedded server open for the life of the
process. Each request gets its own short-lived chdb connection (about 0.2 ms
to open): ``USE``, ``readonly`` and settings are per connection in chdb, so
nothing one request sets can leak into another, and requests run in parallel
(chdb serves separate connections concurrently; no global lock is needed).
``readonly`` is set before the request's own settings, so a read-only caller
cannot lift it: the engine refuses every write, DDL, SYSTEM and SET.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.stack.clickhouse.errors import WarehouseOwnedError
from pipeline.stack.clickhouse.protocol import (
    ABORTED,
    ClickHouseError,
    quote_identifier,
    quote_literal,
)
from pipeline.stack.clickhouse.sql import from_infile

log = logging.getLogger(__name__)

_OWNED_MARKERS = ("Error initializing EmbeddedServer", "Cannot lock file", "already running")


@dataclass(frozen=True)
class Context:
    """How to prepare the connection a statement runs on."""

    database: str | None = None
    readonly: int = 0
    """0 read-write; 1 read-only, settings frozen; 2 read-only, settings allowed (GET)."""
    settings: dict[str, str] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    """A statement's output and the summary ClickHouse puts in X-ClickHouse-Summary."""

    body: bytes
    summary: dict[str, str]


def _summary(read: tuple[int, int], written: tuple[int, int], elapsed_s: float) -> dict[str, str]:
    # ClickHouse sends every summary number as a string.
    return {
        "read_rows": str(read[0]), "read_bytes": str(read[1]),
        "written_rows": str(written[0]), "written_bytes": str(written[1]),
        "total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0",
        "elapsed_ns": str(int(elapsed_s * 1e9)),
    }  # fmt: skip


def _connect(path: str) -> Any:
    import chdb  # imported here so the warehouse's pure modules never load the engine

    return chdb.connect(path)  # type: ignore[no-untyped-call]  # chdb.connect is unannotated


class Engine:
    """The process-wide owner of one chdb data path."""

    def __init__(self, path: Path, drain_timeout_s: float = 30.0) -> None:
        self.path = str(path)
        self._drain_timeout_s = drain_timeout_s
        self._base: Any = None
        self._gate = threading.Condition()
        self._inflight = 0
        self._closing = False
        self.timezone = "UTC"

    def open(self) -> None:
        """Open the embedded server on the data path.

        Raises:
            WarehouseOwnedError: another process has the path open.
        """
        Path(self.path).mkdir(parents=True, exist_ok=True)
        try:
            self._base = _connect(self.path)
        except RuntimeError as exc:
            if any(marker in str(exc) for marker in _OWNED_MARKERS):
                msg = f"the chdb path {self.path} is already open in another process"
                raise WarehouseOwnedError(msg) from None
            raise
        self.timezone = (
            self._base.query("SELECT timezone()", "TabSeparated").bytes().decode().strip()
        )

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        with self._gate:
            if self._closing or self._base is None:
                raise ClickHouseError.new(ABORTED, "The warehouse is shutting down")
            self._inflight += 1
        try:
            yield
        finally:
            with self._gate:
                self._inflight -= 1
                self._gate.notify_all()

    @contextmanager
    def connection(self, ctx: Context) -> Iterator[Any]:
        """A fresh chdb connection prepared for ``ctx``; engine errors become ClickHouseError."""
        with self._admitted():
            conn = _connect(self.path)
            try:
                try:
                    if ctx.database:
                        conn.query(f"USE {quote_identifier(ctx.database)}", "TabSeparated")
                    if ctx.readonly:
                        conn.query(f"SET readonly = {int(ctx.readonly)}", "TabSeparated")
                    for name, value in ctx.settings.items():  # names are checked identifiers
                        conn.query(f"SET {name} = {quote_literal(value)}", "TabSeparated")
                    yield conn
                except ClickHouseError:
                    raise
                except RuntimeError as exc:  # chdb raises RuntimeError subclasses
                    raise ClickHouseError.from_engine(exc) from None
            finally:
                conn.close()

    def query(self, ctx: Context, sql: bytes, fmt: str) -> QueryResult:
        """Run one statement; ``fmt`` is the output format unless the SQL names one."""
        with self.connection(ctx) as conn:
            res = conn.query(sql, fmt, params=ctx.bind)
            return QueryResult(
                res.bytes() or b"",
                _summary(
                    (res.rows_read(), res.bytes_read()),
                    (res.rows_written(), res.bytes_written()),
                    res.elapsed(),
                ),
            )

    def insert(self, ctx: Context, head: str, fmt: str, data: Iterable[bytes]) -> QueryResult:
        """Insert ``data`` (in format ``fmt``) with the INSERT ``head``; all or nothing.

        The data is spooled to a file chunk by chunk (memory stays at one chunk)
        and inserted with ``FROM INFILE``. chdb's streaming insert is not used:
        it reports success when the table refuses the rows (a violated
        constraint, too many partitions in one block), which would lose them
        silently; a statement reports the refusal like a ClickHouse server.
        """
        started = time.perf_counter()
        spool = Path(self.path) / "spool"
        spool.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="insert-", suffix=f".{fmt.lower()}", dir=spool)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in data:
                    out.write(chunk)
            with self.connection(ctx) as conn:
                res = conn.query(from_infile(head, name, fmt), "TabSeparated")
                written = (res.rows_written(), res.bytes_written())
        finally:
            Path(name).unlink(missing_ok=True)
        return QueryResult(b"", _summary(written, written, time.perf_counter() - started))

    def close(self) -> None:
        """Refuse new requests, let running ones finish (bounded), then close the engine."""
        with self._gate:
            self._closing = True
            deadline = time.monotonic() + self._drain_timeout_s
            while self._inflight and time.monotonic() < deadline:
                self._gate.wait(timeout=0.2)
            if self._inflight:
                log.warning("closing the engine with %d requests still running", self._inflight)
        base, self._base = self._base, None
        if base is not None:
            base.close()


def summary_header(result: QueryResult) -> str:
    """The X-ClickHouse-Summary header value."""
    return json.dumps(result.summary, separators=(",", ":"))
