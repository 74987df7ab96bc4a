"""A ClickHouse-HTTP-compatible endpoint over the chdb engine, for loopback use.

It speaks the part of the ClickHouse HTTP interface that clickhouse-connect
and curl use, so every process reaches the embedded warehouse with the same
client code it would use against a ClickHouse server (see ADR 001):

- ``GET /ping`` and ``GET /`` without a query answer ``Ok.``.
- ``GET|POST /``: the statement is the ``query`` parameter, then the body
  (joined by a newline, as ClickHouse does). An ``INSERT ... FORMAT X`` or
  ``VALUES`` statement's data (Native from clickhouse-connect) is decompressed
  per Content-Encoding and spooled chunk by chunk to a file that the insert
  reads (``Engine.insert``), so a refusal (a violated constraint, too many
  partitions) fails the request as a ClickHouse server would.
- Output is in the statement's FORMAT, else ``default_format``, else
  TabSeparated; errors are ``Code: N. DB::Exception: ...`` text with
  ``X-ClickHouse-Exception-Code``.
- The configured user may write; anyone else runs with ``readonly=1`` and a
  writer's GET with ``readonly=2``, as ClickHouse treats GET.
- ``INTO OUTFILE`` and ``FROM INFILE`` are refused for everyone, as a
  ClickHouse server refuses them over HTTP: chdb would open the path on the
  warehouse's own filesystem, even for a read-only caller.

Sessions are not kept: ``session_id`` is accepted, but a statement whose only
effect is session state (SET, USE, temporary tables) is refused rather than
silently forgotten.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from urllib.parse import parse_qsl, urlsplit

from pipeline.config import is_loopback
from pipeline.errors import ConfigError
from pipeline.stack.clickhouse.body import body_chunks
from pipeline.stack.clickhouse.engine import Context, Engine, QueryResult, summary_header
from pipeline.stack.clickhouse.protocol import (
    BAD_ARGUMENTS,
    CONTENT_TYPES,
    INTO_OUTFILE_NOT_ALLOWED,
    NOT_IMPLEMENTED,
    READONLY,
    UNKNOWN_TYPE_OF_QUERY,
    ClickHouseError,
    QueryParams,
    authenticate,
    parse_params,
)
from pipeline.stack.clickhouse.sql import (
    Incomplete,
    client_side_file,
    inline_data,
    leading_words,
    needs_session,
    output_format,
    produces_result,
)

log = logging.getLogger(__name__)

MAX_INSERT_HEAD = 1 << 20
"""Bytes an INSERT statement may take before its data starts."""
MAX_QUERY = 64 << 20
"""Bytes a statement without streamed data may take."""
SYNTAX_ERROR = 62
INTERNAL_ERROR = "Code: 1001. DB::Exception: internal error of the warehouse, see its log"


class WarehouseHTTPServer(ThreadingHTTPServer):
    """The listening server; binds at construction, listens only on :meth:`activate`."""

    daemon_threads = True  # idle keep-alive connections must not hold up shutdown

    def __init__(self, host: str, port: int, engine: Engine, user: str, password: str) -> None:
        if not is_loopback(host):
            msg = (
                f"invalid setting PIPELINE_CLICKHOUSE__URL: the embedded warehouse serves on a "
                f"loopback address only, got host {host!r}"
            )
            raise ConfigError(msg)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.engine = engine
        self.user = user
        self.password = password
        super().__init__((host.strip("[]"), port), _Handler, bind_and_activate=False)
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise

    def activate(self) -> None:
        """Start accepting connections (after the engine is open and migrated)."""
        self.server_activate()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, each reply on a
    # kept-alive connection would wait out the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server_version = "earlystop-warehouse"
    sys_version = ""
    server: WarehouseHTTPServer

    def version_string(self) -> str:
        """The Server header: no Python version, as a server should not advertise it."""
        return self.server_version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line may carry a password parameter: never log it.
        return

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # base signature
        # Only the template: its arguments can hold a raw request line.
        log.debug("http: %s", format)

    def do_HEAD(self) -> None:  # noqa: N802  # http.server naming
        self._reply(200 if urlsplit(self.path).path == "/ping" else 404, b"", "text/plain")

    def do_GET(self) -> None:  # noqa: N802  # http.server naming
        url = urlsplit(self.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        if url.path == "/ping" or (url.path == "/" and not any(k == "query" for k, _ in pairs)):
            self._reply(200, b"Ok.\n", "text/html; charset=UTF-8")
        elif url.path == "/":
            self._execute(pairs, get=True)
        else:
            self._not_found(url.path)

    def do_POST(self) -> None:  # noqa: N802  # http.server naming
        url = urlsplit(self.path)
        if url.path == "/":
            self._execute(parse_qsl(url.query, keep_blank_values=True), get=False)
        else:
            self._not_found(url.path)

    def _not_found(self, path: str) -> None:
        self.close_connection = True
        self._reply(404, f"There is no handle {path}\n".encode(), "text/plain; charset=UTF-8")

    def _reply(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _execute(self, pairs: list[tuple[str, str]], get: bool) -> None:
        started = time.perf_counter()
        params = dict(pairs)
        query_id = params.get("query_id") or str(uuid.uuid4())
        common = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
        }
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            who = authenticate(headers, params, self.server.user, self.server.password)
            qp = parse_params(pairs, headers)
            if "multipart/form-data" in headers.get("content-type", ""):
                msg = "External data and form-encoded queries are not supported by this warehouse"
                raise ClickHouseError.new(NOT_IMPLEMENTED, msg)
            readonly = 1 if not who.writer else 2 if get else 0
            ctx = Context(qp.database, readonly, qp.settings, qp.bind)
            chunks: Iterator[bytes] = body_chunks(self.rfile, headers)
            if qp.query is not None:
                chunks = chain([qp.query.encode() + b"\n"], chunks)
            result, fmt = self._run(ctx, qp, chunks)
        except ClickHouseError as err:
            self._fail(err, common, started)
            return
        except Exception:
            log.exception("query %s failed unexpectedly", query_id)
            self._fail(ClickHouseError(1001, INTERNAL_ERROR), common, started)
            return
        reply = {**common, "X-ClickHouse-Summary": summary_header(result)}
        if fmt is not None:
            reply["X-ClickHouse-Format"] = fmt
        content_type = CONTENT_TYPES.get(fmt or "TabSeparated", "application/octet-stream")
        self._reply(200, result.body, content_type, reply)
        log.debug("query %s ok in %.1f ms", query_id, (time.perf_counter() - started) * 1000)

    def _fail(self, err: ClickHouseError, headers: dict[str, str], started: float) -> None:
        # The body may be half read: close rather than resynchronise the connection.
        self.close_connection = True
        extra = {"X-ClickHouse-Exception-Code": str(err.code), **headers}
        if err.status == 401:
            extra["WWW-Authenticate"] = 'Basic realm="ClickHouse"'
        try:
            self._reply(err.status, err.text.encode() + b"\n", "text/plain; charset=UTF-8", extra)
        except OSError:
            log.debug("the client left before its error reply", exc_info=True)
        elapsed = (time.perf_counter() - started) * 1000
        first = err.text.splitlines()[0] if err.text else ""
        log.info("query %s failed in %.1f ms: %s", headers["X-ClickHouse-Query-Id"], elapsed, first)

    def _run(
        self, ctx: Context, qp: QueryParams, chunks: Iterator[bytes]
    ) -> tuple[QueryResult, str | None]:
        buf = bytearray()
        found = None
        for chunk in chunks:
            buf += chunk
            try:
                found = inline_data(bytes(buf), final=False)
                break
            except Incomplete:
                if len(buf) > MAX_INSERT_HEAD:
                    msg = f"The INSERT statement exceeds {MAX_INSERT_HEAD} bytes before its data"
                    raise ClickHouseError.new(BAD_ARGUMENTS, msg) from None
        else:
            found = inline_data(bytes(buf), final=True)
        engine = self.server.engine
        if found is not None:
            _refuse_client_side_file(found.head.encode())
            data = chain([bytes(buf[found.offset :])], chunks)
            return engine.insert(ctx, found.head, found.fmt, data), None
        for chunk in chunks:
            buf += chunk
            if len(buf) > MAX_QUERY:
                msg = f"The query is longer than {MAX_QUERY} bytes"
                raise ClickHouseError.new(BAD_ARGUMENTS, msg)
        sql = bytes(buf)
        _check_statement(sql, ctx, qp)
        result = engine.query(ctx, sql, qp.default_format)
        fmt = output_format(sql) or qp.default_format
        return result, fmt if produces_result(sql) or result.body else None


def _refuse_client_side_file(sql: bytes) -> None:
    """Refuse INTO OUTFILE / FROM INFILE for everyone, as a ClickHouse server does over HTTP."""
    clause = client_side_file(sql)
    if clause == "INTO OUTFILE":
        raise ClickHouseError.new(INTO_OUTFILE_NOT_ALLOWED, "INTO OUTFILE is not allowed")
    if clause is not None:
        msg = "Query has infile and was send directly to server"  # ClickHouse's own wording
        raise ClickHouseError.new(UNKNOWN_TYPE_OF_QUERY, msg)


def _check_statement(sql: bytes, ctx: Context, qp: QueryParams) -> None:
    """Refuse what the engine would accept but this server cannot honour."""
    head = leading_words(sql, 1)
    if not head:
        raise ClickHouseError(SYNTAX_ERROR, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
    _refuse_client_side_file(sql)
    if head[0] in {"KILL", "SYSTEM"} and ctx.readonly:
        # Every request runs as the engine's one user, which holds every
        # grant: ClickHouse's "own queries only" rule cannot protect writers
        # from a reader's KILL, and chdb's readonly lets SYSTEM STOP MERGES
        # (and other server-wide switches) through.
        msg = f"{head[0]} is not allowed in read-only mode on the embedded warehouse"
        raise ClickHouseError.new(READONLY, msg)
    if qp.session_id and not ctx.readonly and needs_session(sql):
        msg = (
            "This statement only changes session state, and the embedded warehouse keeps no "
            "sessions: pass settings with each query and qualify table names instead"
        )
        raise ClickHouseError.new(NOT_IMPLEMENTED, msg)
