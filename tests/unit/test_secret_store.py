"""Generated secrets: 0600 files under the state folder, filling in only what nobody set."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from pipeline.config import load_settings, settings_env, with_stored_secrets
from pipeline.errors import ConfigError, SecretFileError
from pipeline.secret_store import WAREHOUSE_PASSWORD, ensure_secret, read_secret, secret_path
from pipeline.stack.clickhouse.service import serve
from pipeline.stack.manager import ensure_warehouse_password


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_generated_once_with_owner_only_modes(tmp_path: Path) -> None:
    path = secret_path(tmp_path, WAREHOUSE_PASSWORD)
    first, created = ensure_secret(path)
    assert created
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert len(first.get_secret_value()) == 43  # 32 random bytes, URL-safe base64
    again, created = ensure_secret(path)
    assert not created
    assert again == first
    assert read_secret(path) == first
    assert ensure_secret(secret_path(tmp_path / "other", WAREHOUSE_PASSWORD))[0] != first


def test_the_modes_hold_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = secret_path(tmp_path, WAREHOUSE_PASSWORD)
        ensure_secret(path)
    finally:
        os.umask(old)
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)


def test_unsafe_or_empty_files_are_refused_without_showing_the_value(tmp_path: Path) -> None:
    path = secret_path(tmp_path, WAREHOUSE_PASSWORD)
    assert read_secret(path) is None
    value = ensure_secret(path)[0].get_secret_value()
    path.chmod(0o640)
    with pytest.raises(SecretFileError, match="chmod 600") as err:
        read_secret(path)
    assert value not in str(err.value)
    assert str(path) in str(err.value)
    with pytest.raises(SecretFileError):
        load_settings(state_dir=tmp_path)  # an unsafe file stops every command
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(SecretFileError, match="empty"):
        read_secret(path)


def test_racing_starts_agree_on_one_secret(tmp_path: Path) -> None:
    # A racer must never see the winner's file before its secret is in it (it used to
    # be created empty and written after), so every racer gets the one secret.
    for round_ in range(40):
        path = secret_path(tmp_path / str(round_), WAREHOUSE_PASSWORD)
        seen: list[str] = []
        failed: list[BaseException] = []
        start = threading.Barrier(8)

        def race(path: Path = path, seen: list[str] = seen, failed: list[BaseException] = failed,
                 start: threading.Barrier = start) -> None:  # fmt: skip
            start.wait()
            try:
                seen.append(ensure_secret(path)[0].get_secret_value())
            except Exception as exc:  # noqa: BLE001  # collected and asserted below
                failed.append(exc)

        threads = [threading.Thread(target=race) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failed, failed
        assert len(seen) == 8 and len(set(seen)) == 1
        assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left


def test_the_stored_password_fills_in_only_an_unset_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_CLICKHOUSE__PASSWORD", raising=False)
    assert load_settings(state_dir=tmp_path).clickhouse.password.get_secret_value() == ""
    stored = ensure_secret(secret_path(tmp_path, WAREHOUSE_PASSWORD))[0]
    settings = load_settings(state_dir=tmp_path)
    assert settings.clickhouse.password == stored
    assert settings.warehouse_password_path == secret_path(tmp_path, WAREHOUSE_PASSWORD)
    assert with_stored_secrets(settings) == settings
    # An explicit value wins, even an empty one (a deliberate read-only client).
    explicit = load_settings(state_dir=tmp_path, clickhouse={"password": "from-env"})
    assert explicit.clickhouse.password.get_secret_value() == "from-env"
    monkeypatch.setenv("PIPELINE_CLICKHOUSE__PASSWORD", "")
    assert load_settings(state_dir=tmp_path).clickhouse.password.get_secret_value() == ""


def test_the_stored_password_never_shows(tmp_path: Path) -> None:
    stored = ensure_secret(secret_path(tmp_path, WAREHOUSE_PASSWORD))[0].get_secret_value()
    settings = load_settings(state_dir=tmp_path)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    shown += repr(settings.clickhouse) + str(settings.clickhouse.model_dump())
    assert stored not in shown
    # A child process gets it, as it gets every secret, only through its environment.
    assert settings_env(settings)["PIPELINE_CLICKHOUSE__PASSWORD"] == stored


def test_an_empty_password_is_left_for_the_child_to_find(tmp_path: Path) -> None:
    env = settings_env(load_settings(state_dir=tmp_path))
    assert "PIPELINE_CLICKHOUSE__PASSWORD" not in env
    assert env["PIPELINE_STATE_DIR"] == str(tmp_path.resolve())


def test_up_generates_the_password_unless_one_is_configured(tmp_path: Path) -> None:
    fresh = load_settings(state_dir=tmp_path / "a")
    settings, generated = ensure_warehouse_password(fresh)
    assert generated
    assert settings.clickhouse.password == read_secret(fresh.warehouse_password_path)
    again, generated = ensure_warehouse_password(load_settings(state_dir=tmp_path / "a"))
    assert (again.clickhouse.password, generated) == (settings.clickhouse.password, False)
    configured = load_settings(state_dir=tmp_path / "b", clickhouse={"password": "mine"})
    assert ensure_warehouse_password(configured) == (configured, False)
    assert not configured.warehouse_password_path.exists()
    emptied = load_settings(state_dir=tmp_path / "c", clickhouse={"password": ""})
    assert ensure_warehouse_password(emptied) == (emptied, False)
    assert not emptied.warehouse_password_path.exists()


def test_the_warehouse_refuses_to_start_without_a_writer_password(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, clickhouse={"password": ""})
    with pytest.raises(ConfigError, match="PIPELINE_CLICKHOUSE__PASSWORD"):
        serve(settings, threading.Event())
    assert not settings.chdb_path.exists()  # refused before it took the path
