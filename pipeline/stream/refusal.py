"""What a failed insert is about, and which rows of it ClickHouse refuses.

An insert fails for one of three kinds of reasons, told apart by ClickHouse's
error code (and, where one code covers two cases, its message):

- ``rows``: something in the rows (a value a column or a constraint does not
  take, a block spanning too many partitions, or a value the client cannot
  encode for its column). Splitting the insert finds the rows; the rest is
  written.
- ``retry``: the server, now (down, slow, out of memory, merges behind): the
  same insert later.
- ``stop``: the setup (a table or column missing, credentials or grants
  refused, a query the server cannot run): nothing a retry or a split fixes.

Both functions are pure: :func:`verdict` looks at an exception only, and
:func:`isolate` drives an insert function it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Literal

from pipeline.errors import WarehouseError
from pipeline.warehouse.errors import WarehouseUnreachableError

Verdict = Literal["rows", "retry", "stop"]

ROW_CODES = frozenset({
    6,  # CANNOT_PARSE_TEXT
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  # CANNOT_PARSE_DATE
    41,  # CANNOT_PARSE_DATETIME
    69,  # ARGUMENT_OUT_OF_BOUND
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (throwIf in a view)
    407,  # DECIMAL_OVERFLOW
    469,  # VIOLATED_CONSTRAINT
})  # fmt: skip
"""Codes that are about values in the rows."""

SETUP_CODES = frozenset({
    16,  # NO_SUCH_COLUMN_IN_TABLE
    33,  # CANNOT_READ_ALL_DATA: the client and the table disagree on the columns
    36,  # BAD_ARGUMENTS
    43,  # ILLEGAL_TYPE_OF_ARGUMENT
    47,  # UNKNOWN_IDENTIFIER
    53,  # TYPE_MISMATCH: a column's type changed under the sink
    60,  # UNKNOWN_TABLE
    62,  # SYNTAX_ERROR
    70,  # CANNOT_CONVERT_TYPE
    81,  # UNKNOWN_DATABASE
    115,  # UNKNOWN_SETTING
    164,  # READONLY
    192, 193, 194, 516,  # unknown user, wrong password, required password, auth failed
    497,  # ACCESS_DENIED
})  # fmt: skip
"""Codes that are about the table, the user or the statement: stop and fix them."""

TOO_MANY_PARTS = 252
# One code, two cases: a block spanning too many partitions (split it) and
# parts piling up faster than merges (wait).
_PARTITIONS_MESSAGE = "too many partitions for single insert block"

# What clickhouse-connect raises when it cannot encode a row's value for its
# column (before anything is sent).
_ENCODING_ERRORS: tuple[type[BaseException], ...] = (
    OverflowError,
    UnicodeError,
    struct.error,
    ValueError,
    TypeError,
    AttributeError,
)


def verdict(exc: BaseException) -> Verdict:
    """Whether a failed insert is about its rows, the server now, or the setup."""
    from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

    if isinstance(exc, WarehouseUnreachableError | OperationalError):
        return "retry"
    if isinstance(exc, WarehouseError):
        return "stop"  # the client's connect named the setting to fix
    if isinstance(exc, DataError):
        return "rows"  # the client could not encode a value
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code == TOO_MANY_PARTS:
            return "rows" if _PARTITIONS_MESSAGE in str(exc).lower() else "retry"
        if code in ROW_CODES:
            return "rows"
        if code in SETUP_CODES or type(exc) is not DatabaseError:
            return "stop"  # a ProgrammingError: a column the table lacks, ...
        return "retry"
    if isinstance(exc, _ENCODING_ERRORS):
        return "rows"
    return "stop"


def reason(exc: BaseException) -> str:
    """ClickHouse's (or the client's) reason, on one line, without the client's wrapping."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    marker = "server response: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.split(" (for url ")[0]


class RowsRefusedError(Exception):
    """An insert was refused for something in its rows (raised by an insert function)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def isolate(count: int, insert: Callable[[int, int], None]) -> list[tuple[int, str]]:
    """Insert rows ``[0, count)``; return the rows refused on their own, with why.

    ``insert(lo, hi)`` inserts rows ``lo`` to ``hi - 1`` and raises
    :class:`RowsRefusedError` when ClickHouse refuses them for their content.
    A refused range is split in halves, first half first, until each refused
    row stands alone: the ranges tried depend only on which rows are refused,
    so a replay tries the same ranges (and their deduplication tokens match).
    Any other exception propagates. ``k`` refused rows of ``n`` cost about
    ``2 k log2 n`` inserts.
    """
    refused: list[tuple[int, str]] = []
    pending = [(0, count)] if count else []
    while pending:
        lo, hi = pending.pop()
        try:
            insert(lo, hi)
        except RowsRefusedError as exc:
            if hi - lo == 1:
                refused.append((lo, exc.why))
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
    return refused
