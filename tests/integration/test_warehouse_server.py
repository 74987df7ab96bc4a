"""The embedded warehouse, for real: `python -m pipeline.stack.clickhouse` and the HTTP client.

Each test talks to a real warehouse process over the plain clickhouse-connect
HTTP client, the way every component does. If the warehouse cannot start, the
fixture fails the tests; nothing here skips.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from pipeline.config import Settings, load_settings
from pipeline.errors import WarehouseError
from pipeline.stack.clickhouse.ownership import lock_path, owner_pid
from pipeline.warehouse.client import connect
from pipeline.warehouse.errors import MigrationError, WarehouseUnreachableError
from pipeline.warehouse.migrations import apply_migrations
from pipeline.warehouse.rows import inference_event_row
from schemas.inference import InferenceEvent, Segment
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-for-tests"  # noqa: S105  # a throwaway warehouse's password
READONLY, AUTH_FAILED, UNKNOWN_TABLE = 164, 516, 60
VIOLATED_CONSTRAINT, TOO_MANY_PARTS = 469, 252


@dataclass
class Warehouse:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return self.settings.clickhouse.host_port[1]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def child_env(state_dir: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(
        PIPELINE_STATE_DIR=str(state_dir),
        PIPELINE_CLICKHOUSE__URL=url,
        PIPELINE_CLICKHOUSE__PASSWORD=PASSWORD,
    )
    return env


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  # loopback test URL
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


def start_warehouse(state_dir: Path, timeout_s: float = 60.0) -> Warehouse:
    url = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(state_dir=state_dir, clickhouse={"url": url, "password": PASSWORD})
    log = state_dir / f"warehouse-{uuid.uuid4().hex[:6]}.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.stack.clickhouse"],
            env=child_env(state_dir, url), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wh = Warehouse(settings, proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the warehouse exited with {proc.returncode}:\n{wh.log_tail()}")
        try:
            if http_get(f"{url}/ping") == (200, b"Ok.\n"):
                return wh
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the warehouse did not answer /ping within {timeout_s} s:\n{wh.log_tail()}")


def stop_warehouse(wh: Warehouse) -> int:
    if wh.proc.poll() is None:
        wh.proc.send_signal(signal.SIGTERM)
        try:
            wh.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            wh.proc.kill()
            pytest.fail(f"the warehouse ignored SIGTERM:\n{wh.log_tail()}")
    return wh.proc.returncode


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    wh = start_warehouse(tmp_path_factory.mktemp("warehouse"))
    try:
        yield wh
    finally:
        stop_warehouse(wh)


@pytest.fixture
def writer(warehouse: Warehouse) -> Iterator[Any]:
    client = connect(warehouse.settings)
    yield client
    client.close()


def reader_client(wh: Warehouse, **auth: str) -> Any:
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=wh.port, database=wh.settings.clickhouse.database, **auth
    )


def make_events(request_id: str, count: int) -> list[InferenceEvent]:
    base = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    return [
        InferenceEvent(
            event_id=f"{request_id}-{i}", request_id=request_id, node_id=f"node-{i % 3}",
            ts=base + timedelta(seconds=i), model="m-7b@r2",
            segment=Segment(task="qa", length_bucket="short", tenant="acme"),
            policy_name="default", policy_version=4,
            threshold=None if i % 2 else 0.75, arm="production", exploration=False,
            tokens_prompt=100 + i, tokens_generated=20 + i, tokens_budget=256,
            stop_reason="natural_end" if i % 2 else "confident", confidence=0.875,
            answer=f"answer ünïcode {i}", latency_ms=12.5, node_load=0.25,
        )
        for i in range(count)
    ]  # fmt: skip


def insert_events(client: Any, events: list[InferenceEvent], token: str | None = None) -> int:
    rows = []
    columns: tuple[str, ...] = ()
    for offset, event in enumerate(events):
        columns, row = inference_event_row(event, "inference-events", 3, offset)
        rows.append(row)
    settings = {"insert_deduplication_token": token} if token else None
    return int(
        client.insert(
            "inference_events", rows, column_names=columns, settings=settings
        ).written_rows
    )


def count(client: Any, request_id: str, final: bool = False) -> int:
    table = "inference_events FINAL" if final else "inference_events"
    sql = f"SELECT count() FROM {table} WHERE request_id = {{rid:String}}"  # noqa: S608
    return int(client.query(sql, parameters={"rid": request_id}).result_rows[0][0])


def test_ping_and_a_curl_style_get_answer_like_clickhouse(warehouse: Warehouse) -> None:
    url = warehouse.settings.clickhouse.url
    assert http_get(f"{url}/ping") == (200, b"Ok.\n")
    assert http_get(f"{url}/?query=SELECT+1,+%27a%27") == (200, b"1\ta\n")
    status, body = http_get(f"{url}/?query=SELECT+*+FROM+no_such_table")
    assert status == 404
    assert body.startswith(b"Code: 60.")


def test_migrations_are_applied_once_and_recorded(warehouse: Warehouse, writer: Any) -> None:
    db = warehouse.settings.clickhouse.database
    assert writer.command("EXISTS TABLE inference_events") == 1
    sql = f"SELECT name, length(checksum) FROM {db}.schema_migrations"  # noqa: S608  # test db
    recorded = writer.query(sql)
    assert ("0001_raw_inference_events", 64) in recorded.result_rows
    # The same runner, over HTTP this time, finds nothing left to do.
    migrations = warehouse.settings.infra_dir / "clickhouse" / "migrations"
    assert apply_migrations(writer, db, migrations) == []


def test_the_runner_applies_idempotently_and_refuses_an_edited_file(
    writer: Any, tmp_path: Path
) -> None:
    db = f"mig_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "0001_t.sql"
    path.write_text(
        "CREATE DATABASE IF NOT EXISTS {db};\nCREATE TABLE {db}.t (a UInt8) ENGINE = Memory;\n"
    )
    assert apply_migrations(writer, db, tmp_path) == ["0001_t"]
    assert apply_migrations(writer, db, tmp_path) == []
    path.write_text(path.read_text() + "-- edited\n")
    with pytest.raises(MigrationError, match=r"0001_t\.sql changed after it was applied"):
        apply_migrations(writer, db, tmp_path)
    writer.command(f"DROP DATABASE {db}")


def test_a_replayed_batch_with_its_token_is_stored_once(writer: Any) -> None:
    request_id = f"r-{uuid.uuid4().hex}"
    events = make_events(request_id, 5)
    token = f"inference-events:3:{request_id}"
    assert insert_events(writer, events, token) == 5
    insert_events(writer, events, token)  # the replay after a crash before commit
    assert count(writer, request_id) == 5  # block deduplication, before any merge
    assert count(writer, request_id, final=True) == 5


def test_a_refused_insert_is_reported_and_writes_nothing(writer: Any) -> None:
    # A ClickHouse server refuses these after parsing the data (chdb's streaming
    # insert reported them as written and dropped the rows).
    table = f"refuse_{uuid.uuid4().hex[:8]}"
    writer.command(
        f"CREATE TABLE {table} (ts DateTime64(3, 'UTC'), n UInt16, CONSTRAINT small CHECK n < 100) "
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY n"
    )
    now = datetime.now(UTC)
    with pytest.raises(DatabaseError, match="VIOLATED_CONSTRAINT") as refused:
        writer.insert(table, [[now, 1], [now, 500], [now, 2]])
    assert refused.value.code == VIOLATED_CONSTRAINT
    many_days = [[now - timedelta(days=i), i % 100] for i in range(150)]
    with pytest.raises(DatabaseError) as refused:
        writer.insert(table, many_days)
    assert refused.value.code == TOO_MANY_PARTS
    assert writer.query(f"SELECT count() FROM {table}").result_rows == [(0,)]  # noqa: S608
    assert writer.insert(table, [[now, 1], [now, 2]]).written_rows == 2
    writer.command(f"DROP TABLE {table}")


def test_rows_come_back_with_their_types(writer: Any) -> None:
    request_id = f"r-{uuid.uuid4().hex}"
    events = make_events(request_id, 2)
    insert_events(writer, events)
    result = writer.query(
        "SELECT * FROM inference_events FINAL WHERE request_id = {rid:String} ORDER BY event_id",
        parameters={"rid": request_id},
    )
    got = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    for event, row in zip(events, got, strict=True):
        assert row["ts"] == event.ts and row["ts"].tzinfo is not None
        assert row["threshold"] == event.threshold
        assert row["confidence"] == pytest.approx(event.confidence)
        assert row["exploration"] is False
        assert row["policy_version"] == 4 and row["tokens_generated"] == event.tokens_generated
        assert row["answer"] == event.answer and row["tenant"] == "acme"
        assert row["src_topic"] == "inference-events" and row["src_partition"] == 3
        assert abs(row["ingested_at"] - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip"])
def test_compressed_inserts_and_responses_work(warehouse: Warehouse, compress: str) -> None:
    client = connect(warehouse.settings, compress=compress)
    request_id = f"r-{uuid.uuid4().hex}"
    assert insert_events(client, make_events(request_id, 50)) == 50
    assert count(client, request_id) == 50
    client.close()


def test_parallel_clients_write_and_read(warehouse: Warehouse) -> None:
    request_id = f"r-{uuid.uuid4().hex}"
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            client = connect(warehouse.settings)
            for batch in range(5):
                events = make_events(f"{request_id}-{worker}-{batch}", 20)
                insert_events(
                    client, [e.model_copy(update={"request_id": request_id}) for e in events]
                )
                client.query("SELECT count() FROM inference_events")
            client.close()
        except BaseException as exc:  # noqa: BLE001  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    writer = connect(warehouse.settings)
    assert count(writer, request_id, final=True) == 6 * 5 * 20
    writer.close()


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"username": "default", "password": ""},
        {"username": "default", "password": PASSWORD},
        {"username": "analyst", "password": "anything"},
    ],
)
def test_anyone_but_the_configured_user_only_reads(
    warehouse: Warehouse, writer: Any, auth: dict[str, str]
) -> None:
    reader = reader_client(warehouse, **auth)
    assert reader.query("SELECT count() >= 0 FROM inference_events").result_rows == [(True,)]
    with pytest.raises(DatabaseError) as err:
        insert_events(reader, make_events(f"r-{uuid.uuid4().hex}", 1))
    assert err.value.code == READONLY
    for statement in (
        "INSERT INTO inference_events (event_id) VALUES ('x')",
        "DROP TABLE inference_events",
        "CREATE TABLE t_reader (a UInt8) ENGINE = Memory",
        "ALTER TABLE inference_events DELETE WHERE 1",
        "SET max_threads = 1",
        "SYSTEM FLUSH LOGS",
        "KILL QUERY WHERE 1",
    ):
        with pytest.raises(DatabaseError) as err:
            reader.command(statement)
        assert err.value.code == READONLY, statement
    assert writer.command("EXISTS TABLE inference_events") == 1
    reader.close()


def test_a_writers_get_is_read_only_like_clickhouse(warehouse: Warehouse) -> None:
    request = urllib.request.Request(  # noqa: S310  # loopback test URL
        f"{warehouse.settings.clickhouse.url}/?database=earlystop&query=DROP+TABLE+inference_events",
        headers={
            "X-ClickHouse-User": warehouse.settings.clickhouse.username,
            "X-ClickHouse-Key": PASSWORD,
        },
    )
    try:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310  # loopback test URL
        pytest.fail("a GET dropped a table")
    except urllib.error.HTTPError as err:
        assert err.headers["X-ClickHouse-Exception-Code"] == str(READONLY)


def test_a_wrong_password_fails_authentication(warehouse: Warehouse) -> None:
    with pytest.raises(DatabaseError) as err:
        reader_client(warehouse, username="earlystop", password="wrong")  # noqa: S106  # on purpose
    assert err.value.code == AUTH_FAILED
    wrong = warehouse.settings.model_copy(
        update={
            "clickhouse": warehouse.settings.clickhouse.model_copy(
                update={"password": SecretStr("nope")}
            )
        }
    )
    with pytest.raises(WarehouseError, match="PIPELINE_CLICKHOUSE__PASSWORD") as failure:
        connect(wrong)
    assert "nope" not in str(failure.value)


def test_an_unreachable_warehouse_names_the_url(warehouse: Warehouse) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    gone = warehouse.settings.model_copy(
        update={"clickhouse": warehouse.settings.clickhouse.model_copy(update={"url": url})}
    )
    with pytest.raises(
        WarehouseUnreachableError, match=rf"{url} is not reachable: is `pipeline up`"
    ):
        connect(gone)


def test_sessions_are_refused_rather_than_forgotten(writer: Any) -> None:
    with pytest.raises(DatabaseError) as err:
        writer.command("SET max_threads = 1")
    assert err.value.code == 48
    assert writer.query("SELECT 1", settings={"max_threads": 1}).result_rows == [(1,)]


def test_a_second_owner_fails_fast_naming_the_first(warehouse: Warehouse) -> None:
    state_dir = warehouse.settings.state_dir
    assert owner_pid(lock_path(warehouse.settings.chdb_path)) == warehouse.proc.pid
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "pipeline.stack.clickhouse"],
        env=child_env(state_dir, f"http://127.0.0.1:{free_port()}"),
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert time.monotonic() - started < 20
    assert f"{warehouse.settings.chdb_path} is already open in another process" in second.stderr
    assert f"pid {warehouse.proc.pid}" in second.stderr
    assert warehouse.proc.poll() is None  # the owner is untouched


def test_sigterm_exits_zero_releases_the_path_and_keeps_the_data(tmp_path: Path) -> None:
    wh = start_warehouse(tmp_path / "state")
    request_id = f"r-{uuid.uuid4().hex}"
    client = connect(wh.settings)
    insert_events(client, make_events(request_id, 3))
    client.close()
    assert stop_warehouse(wh) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(wh.proc.pid, 0)
    assert owner_pid(lock_path(wh.settings.chdb_path)) is None
    again = start_warehouse(tmp_path / "state")
    try:
        client = connect(again.settings)
        assert count(client, request_id) == 3
        client.close()
        assert "migrations applied: none pending" in again.log_tail()
    finally:
        assert stop_warehouse(again) == 0
