"""Just enough SQL lexing to route an HTTP request the way ClickHouse does.

ClickHouse reads an ``INSERT ... FORMAT X`` statement and then treats the rest
of the request as data in format X. chdb's ``query()`` does not accept data
after the statement (it drops it silently), so the warehouse must find where
the data starts and stream it into a chdb insert. The lexer skips string
literals, quoted identifiers and comments so a ``FORMAT`` or ``VALUES`` inside
them is never taken for the clause. It is a router, not a parser: the engine
still parses and validates every statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.stack.clickhouse.protocol import quote_literal

_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = b" \t\r\n\f\v"

RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "KILL", "WATCH"}
)
"""Statements that produce a result set even when it has no rows."""


class Incomplete(Exception):  # noqa: N818  # a signal to read more, not an error
    """The buffer ends inside a token: read more of the body before deciding."""


@dataclass(frozen=True)
class Word:
    """A bare word of the statement, with where it is and how deep in parentheses."""

    text: str
    upper: str
    start: int
    end: int
    depth: int


@dataclass(frozen=True)
class InlineData:
    """Where the data of an ``INSERT ... FORMAT``/``VALUES`` statement starts."""

    head: str
    """The statement without its FORMAT clause and data, e.g. ``INSERT INTO t (a)``."""
    fmt: str
    """The input format of the data (``Values`` for ``VALUES``)."""
    offset: int
    """Index of the first data byte in the buffer."""


def _skip_quoted(buf: bytes, i: int, final: bool) -> int:
    quote, n, j = buf[i], len(buf), i + 1
    while j < n:
        ch = buf[j]
        if ch == 0x5C:  # backslash escapes the next byte
            j += 2
            continue
        if ch == quote:
            if j + 1 < n and buf[j + 1] == quote:  # a doubled quote is a literal quote
                j += 2
                continue
            return j + 1
        j += 1
    if final:
        return n
    raise Incomplete


def _skip_until(buf: bytes, i: int, end: bytes, final: bool) -> int:
    j = buf.find(end, i)
    if j >= 0:
        return j + len(end)
    if final:
        return len(buf)
    raise Incomplete


def words(buf: bytes, final: bool = True) -> Iterator[Word]:
    """Yield the bare words of ``buf`` in order, skipping literals and comments.

    Raises:
        Incomplete: when ``final`` is False and a token may continue past the buffer.
    """
    i, depth, n = 0, 0, len(buf)
    while i < n:
        ch = buf[i]
        if ch in _SPACE:
            i += 1
        elif buf.startswith(b"--", i) or ch == 0x23:  # -- and # comments run to the line end
            i = _skip_until(buf, i, b"\n", final)
        elif buf.startswith(b"/*", i):
            i = _skip_until(buf, i + 2, b"*/", final)
        elif ch in b"'\"`":
            i = _skip_quoted(buf, i, final)
        elif ch == 0x28:
            depth, i = depth + 1, i + 1
        elif ch == 0x29:
            depth, i = depth - 1, i + 1
        elif match := _WORD.match(buf, i):
            if match.end() == n and not final:
                raise Incomplete
            text = match.group().decode()
            yield Word(text, text.upper(), match.start(), match.end(), depth)
            i = match.end()
        else:
            i += 1


def leading_words(buf: bytes, count: int = 2) -> tuple[str, ...]:
    """The first ``count`` words of a statement, upper case (fewer if it is shorter)."""
    found: list[str] = []
    for word in words(buf):
        found.append(word.upper)
        if len(found) == count:
            break
    return tuple(found)


def _data_start(buf: bytes, pos: int, final: bool) -> int:
    # ClickHouse: data begins after the first newline following the format
    # name, or at the first non-blank byte when no newline comes first.
    n = len(buf)
    while pos < n and buf[pos] in b" \t\r\f\v":
        pos += 1
    if pos == n and not final:
        raise Incomplete
    if pos < n and buf[pos] == 0x0A:
        pos += 1
    return pos


def inline_data(buf: bytes, final: bool) -> InlineData | None:
    """Locate the data of an INSERT statement that carries it, else None.

    None means the statement carries no data: it is not an INSERT, or it is an
    ``INSERT ... SELECT``.

    Raises:
        Incomplete: when ``final`` is False and the answer needs more bytes.
    """
    stream = words(buf, final)
    first = next(stream, None)
    if first is None and not final:
        raise Incomplete
    if first is None or first.upper != "INSERT":
        return None
    for word in stream:
        if word.depth:
            continue
        if word.upper in {"SELECT", "WITH"}:
            return None  # INSERT ... SELECT carries no data
        if word.upper == "VALUES":
            return InlineData(buf[: word.start].decode().rstrip(), "Values", word.end)
        if word.upper == "FORMAT":
            name = next(stream, None)
            if name is None:
                if not final:
                    raise Incomplete
                return None
            offset = _data_start(buf, name.end, final)
            return InlineData(buf[: word.start].decode().rstrip(), name.text, offset)
    if not final:
        raise Incomplete
    return None


def from_infile(head: str, path: str, fmt: str) -> str:
    """``head`` (an INSERT without its data) reading its data from ``path`` in ``fmt``.

    ``FROM INFILE`` goes after the column list and before any ``SETTINGS``.
    """
    cut = len(head)
    for word in words(head.encode()):
        if not word.depth and word.upper == "SETTINGS":
            cut = len(head.encode()[: word.start].decode())
            break
    tail = head[cut:].strip()
    infile = f"FROM INFILE {quote_literal(path)}"
    return " ".join(part for part in (head[:cut].rstrip(), infile, tail, f"FORMAT {fmt}") if part)


def output_format(buf: bytes) -> str | None:
    """The format named by a statement's trailing ``FORMAT`` clause, if any."""
    found: str | None = None
    stream = words(buf)
    for word in stream:
        if word.depth or word.upper != "FORMAT":
            continue
        name = next(stream, None)
        if name is None or buf[word.end : name.start].strip():
            continue
        rest = buf[name.end :].strip().rstrip(b";").strip()
        if not rest or rest[:8].upper() == b"SETTINGS":
            found = name.text
    return found


def produces_result(buf: bytes) -> bool:
    """True when the statement returns a result set (possibly empty)."""
    head = leading_words(buf, 1)
    return bool(head) and head[0] in RESULT_KEYWORDS


def client_side_file(buf: bytes) -> str | None:
    """``INTO OUTFILE`` or ``FROM INFILE`` when the statement names a client-side file.

    Both clauses are for clickhouse-client, which reads or writes the file
    itself; a ClickHouse server refuses them over HTTP. The embedded engine
    would instead open the path on the warehouse's own filesystem, so a
    read-only caller could write files there.
    """
    previous = ""
    for word in words(buf):
        pair = (previous, word.upper)
        # The clause takes a file name literal; a table called `outfile` is no clause.
        if pair in {("INTO", "OUTFILE"), ("FROM", "INFILE")} and _literal_follows(buf, word.end):
            return " ".join(pair)
        previous = word.upper
    return None


def _literal_follows(buf: bytes, i: int) -> bool:
    n = len(buf)
    while i < n:
        if buf[i] in _SPACE:
            i += 1
        elif buf.startswith(b"--", i) or buf[i] == 0x23:
            i = _skip_until(buf, i, b"\n", final=True)
        elif buf.startswith(b"/*", i):
            i = _skip_until(buf, i + 2, b"*/", final=True)
        else:
            return buf[i] == 0x27  # '
    return False


def needs_session(buf: bytes) -> bool:
    """True for statements whose only effect is session state (SET, USE, temporary tables)."""
    head = leading_words(buf, 2)
    return head[:1] in {("SET",), ("USE",)} or head == ("CREATE", "TEMPORARY")
