"""The warehouse's SQL endpoint is read-only for callers without the configured credentials.

Raw HTTP requests with no credentials at all (what any local process can
send) against the session stack's warehouse: reads work; every write, DDL,
SYSTEM statement, settings change (in the URL, in a SETTINGS clause, or by
SET) and file or network table function is refused, and nothing changes.
``INTO OUTFILE`` / ``FROM INFILE`` are refused for every caller, as a
ClickHouse server refuses them over HTTP.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.warehouse.client import connect

pytestmark = pytest.mark.integration

READONLY, ACCESS_DENIED, OUTFILE, INFILE = "164", "497", "358", "78"


def post(
    settings: Settings,
    sql: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Status, body and X-ClickHouse-Exception-Code of one unauthenticated POST."""
    query = urllib.parse.urlencode({"database": settings.clickhouse.database, **(params or {})})
    request = urllib.request.Request(  # noqa: S310  # the loopback warehouse URL
        f"{settings.clickhouse.url}/?{query}", data=sql.encode(), headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310  # loopback
            return int(reply.status), reply.read().decode(), ""
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(), err.headers.get("X-ClickHouse-Exception-Code")


REFUSED = {
    "insert": ("INSERT INTO inference_events (event_id) VALUES ('ro-probe')", {}),
    "insert-select": ("INSERT INTO inference_events (event_id) SELECT 'ro-probe'", {}),
    "alter": ("ALTER TABLE inference_events DELETE WHERE 1", {}),
    "alter-add": ("ALTER TABLE inference_events ADD COLUMN ro_probe UInt8", {}),
    "delete": ("DELETE FROM inference_events WHERE 1", {}),
    "drop": ("DROP TABLE inference_events", {}),
    "drop-database": ("DROP DATABASE earlystop", {}),
    "truncate": ("TRUNCATE TABLE inference_events", {}),
    "rename": ("RENAME TABLE inference_events TO ro_probe", {}),
    "detach": ("DETACH TABLE inference_events", {}),
    "optimize": ("OPTIMIZE TABLE inference_events FINAL", {}),
    "create": ("CREATE TABLE ro_probe (a UInt8) ENGINE = Memory", {}),
    "create-view": ("CREATE VIEW ro_probe AS SELECT 1", {}),
    "create-temporary": ("CREATE TEMPORARY TABLE ro_probe (a UInt8)", {}),
    "system": ("SYSTEM FLUSH LOGS", {}),
    "system-stop-merges": ("SYSTEM STOP MERGES", {}),
    "system-stop-ttl-merges": ("SYSTEM STOP TTL MERGES", {}),
    "system-stop-fetches": ("SYSTEM STOP FETCHES", {}),
    "system-drop-cache": ("SYSTEM DROP MARK CACHE", {}),
    "kill": ("KILL QUERY WHERE 1", {}),
    "set": ("SET max_threads = 1", {}),
    "url-readonly-0": ("SELECT 1", {"readonly": "0"}),
    "url-readonly-2": ("SELECT 1", {"readonly": "2"}),
    "url-setting": ("SELECT 1", {"max_memory_usage": "1"}),
    "url-readonly-0-insert": ("INSERT INTO inference_events (event_id) VALUES ('x')",
                              {"readonly": "0"}),
    "settings-clause": ("SELECT 1 SETTINGS readonly = 0", {}),
    "multi-statement": ("SELECT 1; DROP TABLE inference_events", {}),
    "file-read": ("SELECT * FROM file('/etc/passwd', 'LineAsString')", {}),
    "file-write": ("INSERT INTO FUNCTION file('ro-probe.csv', 'CSV') SELECT 1", {}),
    "url-function": ("SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')", {}),
    "remote": ("SELECT * FROM remote('127.0.0.1:9', system.one)", {}),
    "executable": ("SELECT * FROM executable('id', 'LineAsString', 'a String')", {}),
    "grant": ("GRANT ALL ON *.* TO default", {}),
    "create-user": ("CREATE USER ro_probe", {}),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_an_unauthenticated_caller_cannot_write_or_change_settings(
    stack: Settings, kind: str
) -> None:
    sql, params = REFUSED[kind]
    status, body, code = post(stack, sql, params)
    assert status == 403, (status, body)
    assert code in {READONLY, ACCESS_DENIED}, body
    # Claiming another user does not help either.
    status, body, code = post(stack, sql, params, {"X-ClickHouse-User": "analyst"})
    assert (status, code in {READONLY, ACCESS_DENIED}) == (403, True), body


def test_reads_work_and_the_refusals_changed_nothing(stack: Settings) -> None:
    assert post(stack, "SELECT 1") == (200, "1\n", "")
    status, body, _ = post(stack, "SELECT getSetting('readonly')")
    assert (status, body) == (200, "1\n")
    status, body, _ = post(
        stack, "SELECT count() FROM inference_events WHERE event_id = 'ro-probe'"
    )
    assert (status, body) == (200, "0\n")
    writer = connect(stack)
    try:
        assert writer.command("EXISTS TABLE inference_events") == 1
        assert writer.command("EXISTS TABLE ro_probe") == 0
        columns = writer.query("DESCRIBE TABLE inference_events").result_rows
        assert "ro_probe" not in [c[0] for c in columns]
    finally:
        writer.close()


@pytest.mark.parametrize("as_writer", [False, True])
def test_into_outfile_and_from_infile_are_refused_for_everyone(
    stack: Settings, tmp_path: Path, as_writer: bool
) -> None:
    headers = {}
    if as_writer:
        headers = {
            "X-ClickHouse-User": stack.clickhouse.username,
            "X-ClickHouse-Key": stack.clickhouse.password.get_secret_value(),
        }
    target = tmp_path / f"out-{uuid.uuid4().hex}.txt"
    for sql in (
        f"SELECT 1 INTO OUTFILE '{target}'",
        f"SELECT 1 INTO OUTFILE '{target}' FORMAT CSV",
        f"SELECT 1 /* c */ INTO\n OUTFILE '{target}' APPEND",
    ):
        status, body, code = post(stack, sql, headers=headers)
        assert (status, code) == (403, OUTFILE), body
    assert not target.exists()
    source = tmp_path / "in.csv"
    source.write_text("ro-probe\n")
    for sql in (
        f"INSERT INTO inference_events (event_id) FROM INFILE '{source}' FORMAT CSV",
        f"INSERT INTO inference_events (event_id) FROM INFILE '{source}'",
    ):
        status, body, code = post(stack, sql, headers=headers)
        assert code == INFILE and status >= 400, body
    assert post(stack, "SELECT 'INTO OUTFILE', 'FROM INFILE'")[0] == 200  # literals are fine
