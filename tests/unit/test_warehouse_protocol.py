"""The ClickHouse HTTP mapping of the embedded warehouse, without sockets or engine."""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterator

import lz4.frame
import pytest

from pipeline.stack.clickhouse.body import body_chunks
from pipeline.stack.clickhouse.protocol import ClickHouseError, authenticate, parse_params
from pipeline.stack.clickhouse.sql import (
    Incomplete,
    from_infile,
    inline_data,
    needs_session,
    output_format,
    produces_result,
)

USER, PASSWORD = "default", "s3cret"


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- statement routing --------------------------------------------------------


def test_native_insert_data_starts_after_the_newline() -> None:
    buf = b"INSERT INTO `db`.`t` (`a`, `b`) FORMAT Native\n\x02\x00\x01a"
    found = inline_data(buf, final=True)
    assert found is not None
    assert (found.head, found.fmt) == ("INSERT INTO `db`.`t` (`a`, `b`)", "Native")
    assert buf[found.offset :] == b"\x02\x00\x01a"


def test_values_and_settings_clauses_are_routed() -> None:
    buf = b"INSERT INTO t SETTINGS insert_deduplication_token='x' VALUES (1, 'FORMAT')"
    found = inline_data(buf, final=True)
    assert found is not None
    assert (found.head, found.fmt) == (
        "INSERT INTO t SETTINGS insert_deduplication_token='x'",
        "Values",
    )
    assert buf[found.offset :] == b" (1, 'FORMAT')"


def test_spooled_data_is_read_from_its_file_before_any_settings() -> None:
    assert from_infile("INSERT INTO `t` (`a`)", "/s/x.native", "Native") == (
        "INSERT INTO `t` (`a`) FROM INFILE '/s/x.native' FORMAT Native"
    )
    head = "INSERT INTO t (a) SETTINGS insert_deduplication_token='SETTINGS'"
    assert from_infile(head, "/s/it's", "Values") == (
        "INSERT INTO t (a) FROM INFILE '/s/it\\'s' "
        "SETTINGS insert_deduplication_token='SETTINGS' FORMAT Values"
    )


def test_format_inside_literals_comments_and_parentheses_is_not_a_clause() -> None:
    buf = b'INSERT INTO t (`format`) /* FORMAT CSV */ -- FORMAT TSV\n FORMAT JSONEachRow {"a":1}'
    found = inline_data(buf, final=True)
    assert found is not None
    assert found.fmt == "JSONEachRow"
    assert buf[found.offset :] == b'{"a":1}'


def test_statements_without_inline_data() -> None:
    assert inline_data(b"SELECT 1 FORMAT Native", final=True) is None
    assert inline_data(b"INSERT INTO t SELECT * FROM s", final=True) is None
    assert inline_data(b"  -- comment\n", final=True) is None


def test_a_split_head_asks_for_more_bytes() -> None:
    for partial in (
        b"INSERT INTO t FORMAT Nat",
        b"INSERT INTO t FORMAT Native  ",
        b"INS",
        b"INSERT 'a",
    ):
        with pytest.raises(Incomplete):
            inline_data(partial, final=False)
    with pytest.raises(Incomplete):  # "SELECT" might be the start of a longer word
        inline_data(b"SELECT", final=False)
    assert inline_data(b"SELECT 1", final=False) is None


def test_output_format_and_result_detection() -> None:
    assert output_format(b"SELECT 1 FORMAT JSON") == "JSON"
    assert output_format(b"SELECT 1 FORMAT JSON SETTINGS max_threads = 1;") == "JSON"
    assert output_format(b"SELECT format FROM t") is None
    assert output_format(b"SELECT 'FORMAT CSV'") is None
    assert produces_result(b"(SELECT 1)") and produces_result(
        b"with x as (select 1) select * from x"
    )
    assert not produces_result(b"CREATE TABLE t (a UInt8) ENGINE = Memory")
    assert needs_session(b"SET max_threads = 1") and needs_session(b"use db")
    assert needs_session(b"CREATE TEMPORARY TABLE t (a UInt8)")
    assert not needs_session(b"SELECT 1")


# -- parameters and credentials -----------------------------------------------


def test_parameters_split_into_fields_bindings_and_settings() -> None:
    qp = parse_params(
        [
            ("query", "SELECT {x:UInt8}"), ("database", "earlystop"), ("param_x", "7"),
            ("session_id", "s1"), ("wait_end_of_query", "1"), ("enable_http_compression", "1"),
            ("insert_deduplication_token", "tok"), ("date_time_input_format", "best_effort"),
        ],
        {},
    )  # fmt: skip
    assert qp.query == "SELECT {x:UInt8}"
    assert qp.database == "earlystop"
    assert qp.bind == {"x": "7"}
    assert qp.session_id == "s1"
    assert qp.settings == {
        "insert_deduplication_token": "tok",
        "date_time_input_format": "best_effort",
    }
    assert qp.default_format == "TabSeparated"


def test_headers_stand_in_for_database_and_format() -> None:
    qp = parse_params([], {"x-clickhouse-database": "d", "x-clickhouse-format": "JSON"})
    assert (qp.database, qp.default_format) == ("d", "JSON")


def test_unsupported_parameters_and_bad_setting_names_are_refused() -> None:
    with pytest.raises(ClickHouseError) as err:
        parse_params([("compress", "1")], {})
    assert err.value.code == 48 and err.value.status == 501
    with pytest.raises(ClickHouseError) as err:
        parse_params([("max threads", "1")], {})
    assert err.value.code == 36


def test_the_configured_user_writes_and_everyone_else_reads() -> None:
    assert authenticate(basic(USER, PASSWORD), {}, USER, PASSWORD).writer
    assert authenticate(
        {"x-clickhouse-user": USER, "x-clickhouse-key": PASSWORD}, {}, USER, PASSWORD
    ).writer
    assert authenticate({}, {"user": USER, "password": PASSWORD}, USER, PASSWORD).writer
    assert not authenticate({}, {}, USER, PASSWORD).writer
    assert not authenticate(basic("analyst", "anything"), {}, USER, PASSWORD).writer


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        (basic(USER, "wrong"), {}),
        ({"authorization": "Bearer abc"}, {}),
        ({"authorization": "Basic !!!"}, {}),
        (basic(USER, PASSWORD), {"user": USER, "password": PASSWORD}),
    ],
)
def test_bad_credentials_fail_like_clickhouse(
    headers: dict[str, str], params: dict[str, str]
) -> None:
    with pytest.raises(ClickHouseError) as err:
        authenticate(headers, params, USER, PASSWORD)
    assert (err.value.code, err.value.status, err.value.name) == (516, 401, "AUTHENTICATION_FAILED")
    assert PASSWORD not in err.value.text


def test_engine_errors_keep_their_code_and_name() -> None:
    exc = RuntimeError(
        "Streaming insert finish failed: "
        "Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE)"
    )
    err = ClickHouseError.from_engine(exc)
    assert err.text.startswith("Code: 60.")
    assert (err.code, err.status, err.name) == (60, 404, "UNKNOWN_TABLE")
    assert ClickHouseError.from_engine(RuntimeError("boom")).status == 500


# -- bodies -------------------------------------------------------------------


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nTrailer: x\r\n\r\n"


def read_all(chunks: Iterator[bytes]) -> bytes:
    return b"".join(chunks)


def test_chunked_bodies_of_concatenated_lz4_frames_are_decoded() -> None:
    raw = chunked(lz4.frame.compress(b"INSERT INTO t FORMAT TSV\n1\n"), lz4.frame.compress(b"2\n"))
    headers = {"transfer-encoding": "chunked", "content-encoding": "lz4"}
    assert read_all(body_chunks(io.BytesIO(raw), headers)) == b"INSERT INTO t FORMAT TSV\n1\n2\n"


def test_sized_gzip_bodies_are_decoded() -> None:
    raw = gzip.compress(b"SELECT 1")
    headers = {"content-length": str(len(raw)), "content-encoding": "gzip"}
    assert read_all(body_chunks(io.BytesIO(raw), headers)) == b"SELECT 1"


@pytest.mark.parametrize(
    ("raw", "headers", "code"),
    [
        (b"abc", {"content-length": "10"}, 36),
        (b"zz\r\nabc", {"transfer-encoding": "chunked"}, 36),
        (
            lz4.frame.compress(b"x" * 1000)[:-6],
            {"content-length": "20", "content-encoding": "lz4"},
            36,
        ),
        (b"", {"content-encoding": "br2"}, 48),
    ],
)
def test_broken_bodies_are_client_errors(raw: bytes, headers: dict[str, str], code: int) -> None:
    if "content-length" in headers and headers.get("content-encoding") == "lz4":
        headers = {**headers, "content-length": str(len(raw))}
    with pytest.raises(ClickHouseError) as err:
        read_all(body_chunks(io.BytesIO(raw), headers))
    assert err.value.code == code
