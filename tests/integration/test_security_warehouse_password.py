"""The embedded warehouse has a writer password by default, and only writers hold it.

`pipeline up` (the session's ``stack`` fixture) generated it under the state
folder, mode 0600. Commands started without ``PIPELINE_CLICKHOUSE__PASSWORD``
read it from there: the stream worker's sink writes with it and `pipeline
migrate` applies migrations with it. Without it a write is refused with
ClickHouse's own errors: a wrong or missing password for the writer's
account fails authentication (516), and anyone else (no credentials, user
``default``) runs read-only (164).
"""

from __future__ import annotations

import signal
import stat
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.secret_store import read_secret
from tests.integration._stream import send_verdict_request
from tests.integration.support import cli_process, eventually, query, run_cli

pytestmark = pytest.mark.integration

READONLY, AUTH_FAILED = 164, 516
PROBE = "INSERT INTO inference_events (event_id) VALUES ('writer-password-probe')"


def without_password(settings: Settings) -> Settings:
    """``settings`` as a child sees them when no password is set in its environment."""
    clickhouse = settings.clickhouse.model_copy(update={"password": SecretStr("")})
    return settings.model_copy(update={"clickhouse": clickhouse})


def raw_client(settings: Settings, **auth: str) -> Any:
    host, port = settings.clickhouse.host_port
    return clickhouse_connect.get_client(
        host=host, port=port, database=settings.clickhouse.database, **auth
    )


def test_up_generated_the_password_readable_by_its_owner_only(stack: Settings) -> None:
    path = stack.warehouse_password_path
    assert path.parent == stack.state_dir / "secrets"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    password = stack.clickhouse.password.get_secret_value()
    assert len(password) >= 32
    assert read_secret(path) == stack.clickhouse.password


def test_a_write_without_the_password_is_refused(stack: Settings) -> None:
    # The writer's account with no password, or a wrong one: authentication fails.
    for wrong in ("", "not-the-password"):
        with pytest.raises(DatabaseError) as err:
            raw_client(stack, username=stack.clickhouse.username, password=wrong)
        assert err.value.code == AUTH_FAILED, wrong
    # Everyone else reads, and only reads.
    for auth in ({}, {"username": "default", "password": ""}):
        reader = raw_client(stack, **auth)
        try:
            assert reader.command("SELECT 1") == 1
            with pytest.raises(DatabaseError) as err:
                reader.command(PROBE)
            assert err.value.code == READONLY, auth
        finally:
            reader.close()
    sql = "SELECT count() FROM inference_events WHERE event_id = 'writer-password-probe'"
    assert query(stack, sql) == [(0,)]


def test_migrate_writes_with_the_stored_password_and_fails_without_it(stack: Settings) -> None:
    done = run_cli(without_password(stack), "migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "none pending" in done.stdout
    refused = run_cli(stack, "migrate", env={"PIPELINE_CLICKHOUSE__PASSWORD": ""})
    assert refused.returncode == 1
    assert "PIPELINE_CLICKHOUSE__PASSWORD" in refused.stderr, refused.stderr
    password = stack.clickhouse.password.get_secret_value()
    assert password not in done.stdout + done.stderr + refused.stdout + refused.stderr


def test_the_worker_writes_with_the_stored_password(isolated: Settings) -> None:
    settings = without_password(isolated)
    proc = cli_process(settings, "worker", "--progress-every", "1")
    try:
        rid = send_verdict_request(isolated, "pw")
        sql = "SELECT em FROM outcomes FINAL WHERE request_id = %(r)s"
        eventually(
            lambda: query(isolated, sql, r=rid) == [(True,)], 120, f"{rid} written", process=proc
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert isolated.clickhouse.password.get_secret_value() not in output


def test_the_worker_without_the_password_cannot_write(isolated: Settings) -> None:
    proc = cli_process(isolated, "worker", env={"PIPELINE_CLICKHOUSE__PASSWORD": "wrong-one"})
    send_verdict_request(isolated, "nopw")  # the sink connects at its first batch
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "PIPELINE_CLICKHOUSE__PASSWORD" in errors[0], output
    assert "wrong-one" not in output
