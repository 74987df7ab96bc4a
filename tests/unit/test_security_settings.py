"""Secrets stay secret, and every Kafka client is built from the shared security settings."""

from __future__ import annotations

import ast
import json
import stat
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.stack.clickhouse.sql import client_side_file
from pipeline.stack.kafka import listener_security, render_config

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
SECRETS = {
    "kafka": {"sasl_password": "kafka-s3cret", "sasl_username": "svc", "sasl_mechanism": "PLAIN"},
    "clickhouse": {"password": "ch-s3cret"},
    "mlflow": {"password": "mlflow-s3cret", "username": "svc"},
    "control": {"signing_key": "control-s3cret"},
    "node": {"signing_keys": {"k1": "node-s3cret"}},
}


def all_secrets() -> list[str]:
    return ["kafka-s3cret", "ch-s3cret", "mlflow-s3cret", "control-s3cret", "node-s3cret"]


def test_no_secret_shows_in_repr_str_or_a_json_dump() -> None:
    settings = load_settings(**SECRETS)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    shown += json.dumps(settings.model_dump(mode="json"))
    for secret in all_secrets():
        assert secret not in shown
    assert settings.kafka.client_config()["sasl.password"] == "kafka-s3cret"


@pytest.mark.parametrize(
    ("section", "field", "url", "variable"),
    [
        (
            "clickhouse",
            "url",
            "http://svc:pw-in-url@127.0.0.1:8123",
            "PIPELINE_CLICKHOUSE__PASSWORD",
        ),
        (
            "mlflow",
            "tracking_uri",
            "http://svc:pw-in-url@127.0.0.1:5000",
            "PIPELINE_MLFLOW__PASSWORD",
        ),
        (
            "mlflow",
            "tracking_uri",
            "postgresql://svc:pw-in-url@db/mlflow",
            "PIPELINE_MLFLOW__PASSWORD",
        ),
    ],
)
def test_a_password_inside_a_url_is_refused_without_echoing_it(
    section: str, field: str, url: str, variable: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(**{section: {field: url}})
    assert variable in str(err.value)
    assert "pw-in-url" not in str(err.value)


def test_the_embedded_broker_is_plaintext_by_default_and_sasl_when_asked(tmp_path: Path) -> None:
    assert listener_security(load_settings()) == ("PLAINTEXT", "")
    sasl = load_settings(
        state_dir=tmp_path,
        kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
               "sasl_username": "svc", "sasl_password": "kafka-s3cret"},
    )  # fmt: skip
    protocol, lines = listener_security(sasl)
    assert protocol == "SASL_PLAINTEXT"
    assert "sasl.mechanism.controller.protocol=PLAIN" in lines
    assert 'user_svc="kafka-s3cret"' in lines
    path = render_config(sasl)
    text = path.read_text()
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in text
    assert "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("kafka", "needle"),
    [
        ({"security_protocol": "SSL"}, "PIPELINE_KAFKA__SECURITY_PROTOCOL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "SECURITY_PROTOCOL"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"}, "PLAIN"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_password": "x"}, "SASL_USERNAME"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "a b", "sasl_password": "x"},
         "SASL_USERNAME"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "svc"}, "SASL_PASSWORD"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "svc",
          "sasl_password": 'quo"te-s3cret'}, "SASL_PASSWORD"),
    ],
)  # fmt: skip
def test_the_embedded_broker_refuses_what_it_cannot_serve(
    kafka: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        listener_security(load_settings(kafka=kafka))
    assert "s3cret" not in str(err.value)


def kafka_client_calls() -> list[tuple[Path, int, str]]:
    """Every ``Producer``, ``Consumer``, ``AdminClient`` or ``reliable_producer`` call."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name in {"Producer", "Consumer", "AdminClient", "reliable_producer"}:
                    found.append((path, node.lineno, ast.unparse(node)))
    return found


def test_every_kafka_client_is_configured_from_the_shared_security_settings() -> None:
    calls = kafka_client_calls()
    assert len(calls) >= 10  # the node SDK, publisher, audit, sink, smoke, admin, demo...
    for path, line, source in calls:
        config_source = source
        if source.startswith("reliable_producer("):
            # Its first argument is the shared settings; it starts from client_config().
            assert "kafka" in source.split(",")[0], f"{path}:{line}: {source}"
            config_source = (PACKAGE / "node" / "kafka.py").read_text()
        elif "client_config()" not in source:
            # A prepared dict: it must come from a function that starts from client_config().
            text = path.read_text()
            config_source = text
        assert "client_config()" in config_source, f"{path}:{line}: {source}"
    emitter = (PACKAGE / "node" / "emitter.py").read_text()
    assert "reliable_producer(kafka," in emitter
    assert "**kafka.client_config()" in (PACKAGE / "node" / "kafka.py").read_text()
    app = (PACKAGE / "stream" / "app.py").read_text()
    assert "broker_credentials=faust_credentials(settings.kafka)" in app


@pytest.mark.parametrize(
    ("sql", "clause"),
    [
        (b"SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        (b"select 1 into\n outfile '/tmp/x' FORMAT CSV", "INTO OUTFILE"),
        (b"SELECT 1 /* c */ INTO -- c\n OUTFILE 'x'", "INTO OUTFILE"),
        (b"INSERT INTO t FROM INFILE '/etc/passwd' FORMAT CSV", "FROM INFILE"),
        (b"SELECT 'INTO OUTFILE', `FROM INFILE`", None),
        (b"INSERT INTO outfile VALUES (1)", None),
        (b"SELECT * FROM infile", None),
        (b"SELECT 1 INTO OUTFILE /* c */ 'x'", "INTO OUTFILE"),
    ],
)
def test_client_side_file_clauses_are_found_outside_literals(
    sql: bytes, clause: str | None
) -> None:
    assert client_side_file(sql) == clause
