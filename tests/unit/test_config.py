from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings, is_loopback, load_settings, settings_env
from pipeline.errors import ConfigError


def test_defaults_point_at_the_embedded_stack_on_loopback() -> None:
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.clickhouse.host_port == ("127.0.0.1", 8123)
    assert s.mlflow.host_port == ("127.0.0.1", 5000)
    assert s.state_dir.is_absolute()
    assert s.chdb_dsn == f"chdb://{s.state_dir / 'clickhouse'}"


def test_environment_is_read_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("PIPELINE_CLICKHOUSE__PASSWORD", "s3cret")
    monkeypatch.setenv("PIPELINE_KAFKA__TOPIC_PREFIX", "acme.")
    s = load_settings()
    assert s.kafka.first_server == ("127.0.0.1", 19092)
    assert s.clickhouse.password.get_secret_value() == "s3cret"
    assert s.topic("outcomes") == "acme.outcomes"


def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_EMBEDDED__KAFKA_CONTROLLER_PORT", "99999")
    with pytest.raises(
        ConfigError, match=r"^invalid setting PIPELINE_EMBEDDED__KAFKA_CONTROLLER_PORT"
    ):
        load_settings()


def test_unknown_security_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ConfigError, match="PIPELINE_KAFKA__SECURITY_PROTOCOL"):
        load_settings()


def test_bad_clickhouse_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_CLICKHOUSE__URL", "chdb:///tmp/x")
    with pytest.raises(ConfigError, match="PIPELINE_CLICKHOUSE__URL"):
        load_settings()


def test_secrets_never_appear_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(
        kafka={"sasl_password": "hunter2", "sasl_username": "u", "sasl_mechanism": "PLAIN"},
        clickhouse={"password": "pw-ch"},
        mlflow={"password": "pw-ml"},
    )
    text = repr(s) + str(s)
    for secret in ("hunter2", "pw-ch", "pw-ml"):
        assert secret not in text
    assert s.kafka.client_config()["sasl.password"] == "hunter2"


def test_settings_env_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = load_settings(
        state_dir=tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:1234", "topic_prefix": "x."},
        clickhouse={"password": "pw"},
    )
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    assert load_settings() == original


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104  # the point: all interfaces is not loopback
        ("10.0.0.1", False),
        ("kafka", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
