"""The ClickHouse HTTP interface, as data: parameters, credentials, errors.

Pure functions over what a request carries, so the mapping can be tested
without a socket or an engine. What ClickHouse does is the reference:
URL parameters that are not protocol fields are settings; ``param_x`` binds
``{x:Type}``; credentials come from Basic auth, the ``X-ClickHouse-User`` /
``X-ClickHouse-Key`` headers or the ``user`` / ``password`` parameters (one
method per request); errors travel as ``Code: N. DB::Exception: ...`` text
with the code in ``X-ClickHouse-Exception-Code``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Protocol fields the server consumes itself; everything else is a setting.
_FIELDS = frozenset(
    {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
     "session_check", "user", "password", "quota_key", "buffer_size", "wait_end_of_query",
     "client_protocol_version", "stacktrace"}
)  # fmt: skip
# Fields that would change the wire format in ways this server does not speak.
_UNSUPPORTED = frozenset({"compress", "decompress", "role"})
# HTTP-transport settings: meaningful to a server's HTTP layer, unknown to chdb.
TRANSPORT_SETTINGS = frozenset(
    {"send_progress_in_http_headers", "http_headers_progress_interval_ms",
     "enable_http_compression", "http_zlib_compression_level", "http_response_buffer_size",
     "http_wait_end_of_query", "cancel_http_readonly_queries_on_client_close",
     "add_http_cors_header", "http_native_compression_disable_checksumming_on_decompress",
     "http_write_exception_in_output_format"}
)  # fmt: skip
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\))?\s*$")

AUTHENTICATION_FAILED = 516
READONLY = 164
NOT_IMPLEMENTED = 48
BAD_ARGUMENTS = 36
ABORTED = 236
UNKNOWN_TYPE_OF_QUERY = 78
INTO_OUTFILE_NOT_ALLOWED = 358
_NAMES = {
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED", READONLY: "READONLY",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED", BAD_ARGUMENTS: "BAD_ARGUMENTS", ABORTED: "ABORTED",
    UNKNOWN_TYPE_OF_QUERY: "UNKNOWN_TYPE_OF_QUERY",
    INTO_OUTFILE_NOT_ALLOWED: "INTO_OUTFILE_NOT_ALLOWED",
}  # fmt: skip
# A subset of ClickHouse's exceptionCodeToHTTPStatus; anything else is a 500.
_STATUS = {
    **dict.fromkeys((192, 193, 194, AUTHENTICATION_FAILED), 401),
    **dict.fromkeys((READONLY, 497, INTO_OUTFILE_NOT_ALLOWED), 403),
    **dict.fromkeys((6, 27, 38, 41, 62, 72, 115, 117, BAD_ARGUMENTS), 400),
    **dict.fromkeys((16, 46, 47, 50, 60, 73, 81), 404),
    NOT_IMPLEMENTED: 501,
    ABORTED: 503,
}

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}
"""Content-Type per output format; other formats are application/octet-stream."""


class ClickHouseError(Exception):
    """An error as ClickHouse reports it: a numeric code and ``Code: N. ...`` text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    @classmethod
    def new(cls, code: int, message: str) -> ClickHouseError:
        """Build one the way the server words its own errors."""
        name = _NAMES.get(code, "UNKNOWN")
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Wrap an engine exception, dropping chdb's own prefixes before ``Code:``."""
        message = str(exc)
        start = message.find("Code: ")
        text = message[start:].strip() if start >= 0 else message.strip()
        match = _CODE.search(text)
        return cls(int(match.group(1)) if match else 1001, text or type(exc).__name__)

    @property
    def status(self) -> int:
        """The HTTP status ClickHouse would answer with."""
        return _STATUS.get(self.code, 500)

    @property
    def name(self) -> str:
        """The symbolic error name, e.g. ``UNKNOWN_TABLE``."""
        match = _NAME.search(self.text)
        return match.group(1) if match else _NAMES.get(self.code, "UNKNOWN")


@dataclass(frozen=True)
class Identity:
    """Who sent a request, and whether it may write."""

    user: str
    writer: bool


def _basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, sep, password = decoded.partition(":")
    if not sep:
        raise ClickHouseError.new(AUTHENTICATION_FAILED, "Malformed Basic authorization header")
    return user, password


def authenticate(
    headers: Mapping[str, str], params: Mapping[str, str], user: str, password: str
) -> Identity:
    """Classify a request: the configured user may write, anyone else only reads.

    ``headers`` has lower-case names; ``params`` are the URL parameters.

    Raises:
        ClickHouseError: code 516 for a wrong password of the configured user,
            an unsupported scheme or more than one authentication method.
    """
    found: list[tuple[str, str]] = []
    if "x-clickhouse-user" in headers:
        found.append((headers["x-clickhouse-user"], headers.get("x-clickhouse-key", "")))
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            msg = f"Unsupported authorization scheme {scheme!r}: use Basic or X-ClickHouse-User"
            raise ClickHouseError.new(AUTHENTICATION_FAILED, msg)
        found.append(_basic(value))
    if "user" in params or "password" in params:
        found.append((params.get("user", "default"), params.get("password", "")))
    if len(found) > 1:
        msg = "More than one authentication method in one request: use exactly one"
        raise ClickHouseError.new(AUTHENTICATION_FAILED, msg)
    if not found:
        return Identity("", writer=False)
    who, secret = found[0]
    if who != user:
        return Identity(who, writer=False)
    if hmac.compare_digest(secret.encode(), password.encode()):
        return Identity(who, writer=True)
    msg = f"{who}: Authentication failed: password is incorrect, or there is no user with such name"
    raise ClickHouseError.new(AUTHENTICATION_FAILED, msg)


@dataclass(frozen=True)
class QueryParams:
    """What the URL and headers say about how to run the statement."""

    query: str | None = None
    database: str | None = None
    default_format: str = "TabSeparated"
    query_id: str | None = None
    session_id: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)


def parse_params(pairs: Iterable[tuple[str, str]], headers: Mapping[str, str]) -> QueryParams:
    """Split URL parameters into protocol fields, bind parameters and settings.

    ``headers`` has lower-case names (``X-ClickHouse-Database`` and
    ``X-ClickHouse-Format`` stand in for the parameters, as in ClickHouse).

    Raises:
        ClickHouseError: for a parameter this server does not implement, or a
            setting name that is not an identifier.
    """
    fields: dict[str, str] = {}
    settings: dict[str, str] = {}
    bind: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("param_"):
            bind[name[6:]] = value
        elif name in _FIELDS:
            fields[name] = value
        elif name in _UNSUPPORTED:
            if value not in {"", "0", "false"}:
                msg = f"URL parameter {name!r} is not supported by the embedded warehouse"
                raise ClickHouseError.new(NOT_IMPLEMENTED, msg)
        elif name in TRANSPORT_SETTINGS:
            continue
        elif _SETTING_NAME.match(name):
            settings[name] = value
        else:
            raise ClickHouseError.new(BAD_ARGUMENTS, f"Invalid setting name {name!r}")
    return QueryParams(
        query=fields.get("query"),
        database=fields.get("database") or headers.get("x-clickhouse-database") or None,
        default_format=fields.get("default_format")
        or headers.get("x-clickhouse-format")
        or "TabSeparated",
        query_id=fields.get("query_id") or None,
        session_id=fields.get("session_id") or None,
        settings=settings,
        bind=bind,
    )


def quote_identifier(name: str) -> str:
    """Backquote an identifier for SQL."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value: str) -> str:
    """Single-quote a string literal for SQL (settings accept quoted numbers)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
