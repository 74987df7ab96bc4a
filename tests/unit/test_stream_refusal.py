"""Refused inserts, without services: what a failure is about, and isolating refused rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import WarehouseError
from pipeline.stream.errors import SinkError
from pipeline.stream.refusal import RowsRefusedError, isolate, reason, verdict
from pipeline.stream.writer import ClickHouseWriter, SinkBatch, SinkRecord
from pipeline.warehouse import rows
from pipeline.warehouse.errors import WarehouseUnreachableError
from schemas import DeadLetter, Outcome
from schemas.examples import example_messages, inference_event


def server(code: int, text: str) -> DatabaseError:
    return DatabaseError(
        f"Received ClickHouse exception, code: {code}, server response: Code: {code}. "
        f"DB::Exception: {text} (for url http://127.0.0.1:1)",
        code=code,
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            server(469, "Constraint `c` for table t is violated at row 2. (VIOLATED_CONSTRAINT)"),
            "rows",
        ),
        (server(252, "Too many partitions for single INSERT block (more than 100)."), "rows"),
        (server(252, "Too many parts (300). Merges are processing significantly slower"), "retry"),
        (server(321, "Value is out of range of data type"), "rows"),
        (server(27, "Cannot parse input"), "rows"),
        (DataError("Unable to create native array for column `u`: error"), "rows"),
        (OverflowError("int too big to convert"), "rows"),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "rows"),
        (server(60, "Table earlystop.outcomes does not exist. (UNKNOWN_TABLE)"), "stop"),
        (server(81, "Database x does not exist"), "stop"),
        (server(516, "Authentication failed"), "stop"),
        (server(497, "Not enough privileges"), "stop"),
        (server(53, "Type mismatch"), "stop"),
        (ProgrammingError("Unrecognized column 'b' in table t2"), "stop"),
        (
            WarehouseError("ClickHouse refused user 'x': check PIPELINE_CLICKHOUSE__PASSWORD"),
            "stop",
        ),
        (RuntimeError("a bug"), "stop"),
        (server(241, "Memory limit exceeded"), "retry"),
        (server(202, "Too many simultaneous queries"), "retry"),
        (OperationalError("connection refused"), "retry"),
        (WarehouseUnreachableError("down"), "retry"),
    ],
)
def test_a_failure_is_about_the_rows_the_server_now_or_the_setup(
    exc: BaseException, expected: str
) -> None:
    assert verdict(exc) == expected


def test_the_reason_is_clickhouses_own_line() -> None:
    exc = server(469, "Constraint `small` is violated at row 2.\n Expression: (u < 100).")
    assert reason(exc) == (
        "Code: 469. DB::Exception: Constraint `small` is violated at row 2. Expression: (u < 100)."
    )
    assert reason(ValueError()) == "ValueError"


class Table:
    """An insert function over rows, refusing the ``bad`` ones (all or nothing per call)."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: list[tuple[int, int]] = []
        self.stored: list[int] = []

    def insert(self, lo: int, hi: int) -> None:
        self.calls.append((lo, hi))
        if self.bad & set(range(lo, hi)):
            msg = f"row {min(self.bad & set(range(lo, hi)))}"
            raise RowsRefusedError(msg)
        self.stored += range(lo, hi)


@given(
    st.integers(0, 200).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)) if n else st.just(set()))
    )
)
def test_isolation_writes_every_good_row_once_and_names_each_refused_row(
    case: tuple[int, set[int]],
) -> None:
    count, bad = case
    table = Table(bad)
    refused = isolate(count, table.insert)
    assert sorted(i for i, _ in refused) == sorted(bad)
    assert all(why == f"row {i}" for i, why in refused)
    assert sorted(table.stored) == sorted(set(range(count)) - bad)  # each once
    again = Table(bad)
    isolate(count, again.insert)
    assert again.calls == table.calls  # a replay tries the same ranges: the same tokens


def test_one_bad_row_costs_a_logarithmic_number_of_inserts() -> None:
    table = Table({500})
    assert isolate(1000, table.insert) == [(500, "row 500")]
    assert len(table.calls) <= 2 * 10 + 1


def test_other_failures_propagate_from_isolation() -> None:
    def insert(lo: int, hi: int) -> None:
        msg = "no table"
        raise SinkError(msg)

    with pytest.raises(SinkError):
        isolate(3, insert)


# -- the writer on a client that refuses rows ------------------------------------------

MARK = "refuse-me"


class RefusingClient:
    """Records inserts; refuses any insert holding a row with MARK, like a CHECK constraint."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[list[Any]], str]] = []
        self.refusals = 0

    def query(self, sql: str, parameters: dict[str, Any]) -> Any:
        return type("Result", (), {"result_rows": []})()

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        return type("Context", (), {"table": table, "settings": {}, "data": None})()

    def data_insert(self, context: Any) -> None:
        if any(MARK in str(row) for row in context.data):
            self.refusals += 1
            raise server(469, "Constraint `no_mark` is violated at row 1. (VIOLATED_CONSTRAINT)")
        token = context.settings["insert_deduplication_token"]
        self.inserts.append((context.table, list(context.data), token))

    def close(self) -> None:
        return


def event_record(offset: int, answer: str = "ok") -> SinkRecord:
    rid = f"r{offset}"
    event = inference_event().model_copy(
        update={"request_id": rid, "event_id": f"e{offset}", "answer": answer}
    )
    return SinkRecord("inference-events", "ev", 0, offset, event.to_bytes(), rid.encode())


def sent_to(letters: list[DeadLetter]) -> Any:
    def send(batch: Sequence[DeadLetter]) -> None:
        letters.extend(batch)

    return send


def test_the_writer_writes_around_a_refused_row_and_dead_letters_it() -> None:
    client, letters = RefusingClient(), []
    writer = ClickHouseWriter(lambda: client, dead_letters=sent_to(letters))
    records = [event_record(i, MARK if i == 5 else "ok") for i in range(10)]
    batch = SinkBatch(records)
    assert writer.write(batch) == {"inference_events": 9}
    at = rows.INFERENCE_EVENT_COLUMNS.index("src_offset")
    offsets = sorted(row[at] for _, values, _ in client.inserts for row in values)
    assert offsets == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    tokens = [token for _, _, token in client.inserts]
    assert len(set(tokens)) == len(tokens) and all(
        t.startswith("inference_events:") for t in tokens
    )
    [letter] = letters
    assert (letter.source_topic, letter.partition, letter.offset) == ("ev", 0, 5)
    assert letter.error_kind == "warehouse_refused" and letter.raw == records[5].value
    assert letter.key == b"r5" and "VIOLATED_CONSTRAINT" in letter.error
    first = list(client.inserts)
    client.inserts.clear()
    writer.write(batch)  # a replay: the same ranges under the same tokens
    assert client.inserts == first


def test_every_row_refused_is_the_table_and_stops_the_sink() -> None:
    client, letters = RefusingClient(), []
    writer = ClickHouseWriter(lambda: client, dead_letters=sent_to(letters))
    with pytest.raises(SinkError, match="every row of the insert into inference_events"):
        writer.write(SinkBatch([event_record(i, MARK) for i in range(4)]))
    assert not letters


def test_an_outcome_whose_points_are_refused_is_not_written() -> None:
    outcome = example_messages()["outcome"]
    assert isinstance(outcome, Outcome) and outcome.event.trajectory
    bad_points = outcome.event.trajectory[0].model_copy(update={"answer": MARK})
    bad = outcome.model_copy(
        update={
            "request_id": "r-bad",
            "event": outcome.event.model_copy(
                update={
                    "request_id": "r-bad",
                    "trajectory": (bad_points, *outcome.event.trajectory[1:]),
                }
            ),
        }
    )
    client, letters = RefusingClient(), []
    writer = ClickHouseWriter(lambda: client, dead_letters=sent_to(letters))
    records = [
        SinkRecord("outcomes", "o", 0, i, o.to_bytes()) for i, o in enumerate([outcome, bad])
    ]
    written = writer.write(SinkBatch(records))
    points = len(outcome.event.trajectory)
    assert written == {"trajectory_points": 2 * points - 1, "outcomes": 1}
    stored = [
        row[0] for table, values, _ in client.inserts if table == "outcomes" for row in values
    ]
    assert stored == [outcome.request_id]
    assert [(letter.offset, letter.error_kind) for letter in letters] == [(1, "warehouse_refused")]
    assert "trajectory_points" in letters[0].error


def test_a_refused_dead_letter_is_not_dead_lettered_again() -> None:
    client, letters = RefusingClient(), []
    writer = ClickHouseWriter(lambda: client, dead_letters=sent_to(letters))
    letter = DeadLetter.capture(
        source_topic="x", partition=0, offset=1, key=None, raw=MARK.encode(), error=MARK,
        error_kind="decode", ts=inference_event().ts, worker_id="w",
    )  # fmt: skip
    ok = [event_record(0)]
    batch = SinkBatch([*ok, SinkRecord("dead-letters", "dl", 0, 0, letter.to_bytes())])
    assert writer.write(batch) == {"inference_events": 1}
    assert not letters and batch.refused == {1: batch.refused[1]}
