"""Secrets never reach the output of the CLI: status, listings, logs or error messages.

Every secret setting is given a recognisable value and each command runs as
an operator would against the session stack; some then fail on purpose (a
wrong ClickHouse password, MLflow or Kafka away) so the error paths are
covered too. None of the values may appear in stdout or stderr.
"""

from __future__ import annotations

import json
import stat
import subprocess

import pytest
from pydantic import SecretStr

from pipeline.config import Settings
from tests.integration.support import free_port, run_cli

pytestmark = pytest.mark.integration

SECRET_ENV = {
    "PIPELINE_KAFKA__SASL_PASSWORD": "kafka-pw-7f3a",
    "PIPELINE_CLICKHOUSE__PASSWORD": "ch-pw-7f3a",
    "PIPELINE_MLFLOW__USERNAME": "svc",
    "PIPELINE_MLFLOW__PASSWORD": "mlflow-pw-7f3a",
    "PIPELINE_CONTROL__SIGNING_KEY": "control-key-7f3a",
    "PIPELINE_NODE__SIGNING_KEYS": '{"k1": "node-key-7f3a"}',
}
SECRETS = ["kafka-pw-7f3a", "ch-pw-7f3a", "mlflow-pw-7f3a", "control-key-7f3a", "node-key-7f3a"]


def run(stack: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(stack, *args, env={**SECRET_ENV, **env})


def test_no_command_prints_a_secret(stack: Settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    runs = {
        "status --json": run(stack, "status", "--json"),
        "status": run(stack, "status"),
        "topics list": run(stack, "topics", "list"),
        "sql, wrong password": run(stack, "sql", "SELECT 1"),
        "optimize, MLflow away": run(
            stack,
            "optimize",
            PIPELINE_MLFLOW__TRACKING_URI=dead,
            PIPELINE_CLICKHOUSE__PASSWORD=stack.clickhouse.password.get_secret_value(),
        ),
        "policy list, MLflow away": run(
            stack, "policy", "list", PIPELINE_MLFLOW__TRACKING_URI=dead
        ),
        "bad setting": run(stack, "status", PIPELINE_CLICKHOUSE__URL="http://svc:ch-pw-7f3a@h:1"),
    }
    for name, done in runs.items():
        output = done.stdout + done.stderr
        for secret in SECRETS:
            assert secret not in output, f"{name} printed a secret:\n{output}"
        assert "Traceback" not in output, f"{name}:\n{output}"

    rows = [json.loads(line) for line in runs["status --json"].stdout.splitlines()]
    assert {row["name"] for row in rows} == {"kafka", "clickhouse", "mlflow"}
    assert runs["sql, wrong password"].returncode == 1
    assert "PIPELINE_CLICKHOUSE__PASSWORD" in runs["sql, wrong password"].stderr
    assert runs["optimize, MLflow away"].returncode == 1
    assert "not reachable" in runs["optimize, MLflow away"].stderr
    assert runs["bad setting"].returncode != 0
    assert "PIPELINE_CLICKHOUSE__URL" in runs["bad setting"].stderr + runs["bad setting"].stdout


def generated_secrets(stack: Settings) -> dict[str, str]:
    """Every secret `pipeline up` generated for the session stack, by file name."""
    folder = stack.state_dir / "secrets"
    return {p.name: p.read_text().strip() for p in folder.iterdir()}


def test_service_logs_hold_no_secret(stack: Settings) -> None:
    logs = sorted((stack.state_dir / "logs").iterdir())
    assert {p.name for p in logs} >= {"kafka.log", "clickhouse.log", "mlflow.log"}
    generated = generated_secrets(stack)
    assert len(generated) == 4  # the warehouse writer's and MLflow's three
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, log
        for name, value in generated.items():
            assert value not in text, f"{log} holds {name}"


def test_the_mlflow_secrets_are_0600_and_never_printed(stack: Settings) -> None:
    folder = stack.state_dir / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    generated = generated_secrets(stack)
    assert set(generated) == {
        "clickhouse-writer-password",
        "mlflow-admin-password",
        "mlflow-controller-password",
        "mlflow-flask-secret-key",
    }
    for name in generated:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    auth_db = stack.state_dir / "mlflow" / "basic_auth.db"  # the users' password hashes
    assert stat.S_IMODE(auth_db.stat().st_mode) == 0o600
    assert "admin_password" not in (stack.state_dir / "mlflow" / "basic_auth.ini").read_text()

    # As an operator runs them: nothing in the environment, the stored files are read.
    unset = stack.model_copy(
        update={
            "mlflow": stack.mlflow.model_copy(
                update={"username": None, "password": None, "admin_password": None}
            )
        }
    )
    dead = f"http://127.0.0.1:{free_port()}"
    wrong = {"MLFLOW_TRACKING_USERNAME": "nobody", "MLFLOW_TRACKING_PASSWORD": "wrong-pw-7f3a"}
    runs = {
        "up, already running": run_cli(unset, "up"),
        "status": run_cli(unset, "status"),
        "status --json": run_cli(unset, "status", "--json"),
        "policy list": run_cli(unset, "policy", "list", "--model", "no-such-model"),
        "policy list, MLflow away": run_cli(
            unset, "policy", "list", env={"PIPELINE_MLFLOW__TRACKING_URI": dead}
        ),
        "policy list, wrong password": run_cli(
            unset,
            "policy",
            "list",
            "--model",
            "no-such-model",
            env={
                "PIPELINE_MLFLOW__USERNAME": "pipeline-controller",
                "PIPELINE_MLFLOW__PASSWORD": "wrong-pw-7f3a",
            },
        ),
        "approve, wrong login": run_cli(
            unset, "policy", "approve", "1", "--reason", "x", "--model", "m", env=wrong
        ),
        "reviewers add, MLflow away": run_cli(
            unset, "reviewers", "add", "zed", env={"PIPELINE_MLFLOW__TRACKING_URI": dead}
        ),
    }
    for name, done in runs.items():
        output = done.stdout + done.stderr
        for secret_name, value in generated.items():
            assert value not in output, f"{name} printed {secret_name}:\n{output}"
        assert "wrong-pw-7f3a" not in output, name
        assert "Traceback" not in output, f"{name}:\n{output}"
    assert runs["up, already running"].returncode == 0, runs["up, already running"].stderr
    assert "pipeline-controller: present" in runs["up, already running"].stdout
    assert runs["status"].returncode == 0
    assert runs["policy list"].returncode == 0, runs["policy list"].stderr
    assert runs["approve, wrong login"].returncode == 1
    # A refused login is named as such, not as an unreachable server.
    refused = runs["policy list, wrong password"]
    assert refused.returncode != 0
    assert "refused the login of 'pipeline-controller'" in refused.stderr, refused.stderr
    assert "not reachable" not in refused.stderr
    assert "refused the login of 'nobody'" in runs["approve, wrong login"].stderr
    assert runs["reviewers add, MLflow away"].returncode == 1


def test_the_generated_warehouse_password_is_never_printed(stack: Settings) -> None:
    password = stack.clickhouse.password.get_secret_value()
    assert password  # `pipeline up` generated it
    # As an operator runs them: no password in the environment, the stored one is read.
    unset = stack.model_copy(
        update={"clickhouse": stack.clickhouse.model_copy(update={"password": SecretStr("")})}
    )
    runs = {
        "up, already running": run_cli(unset, "up"),
        "status": run_cli(unset, "status"),
        "status --json": run_cli(unset, "status", "--json"),
        "migrate": run_cli(unset, "migrate"),
        "sql": run_cli(unset, "sql", "SELECT count() FROM inference_events"),
        "sql, refused": run_cli(unset, "sql", "DROP TABLE inference_events"),
        "sql, bad query": run_cli(unset, "sql", "SELEKT"),
        "bad setting": run_cli(unset, "status", env={"PIPELINE_CLICKHOUSE__URL": "ftp://x"}),
    }
    for name, done in runs.items():
        output = done.stdout + done.stderr
        assert password not in output, f"{name} printed the warehouse password:\n{output}"
        assert "Traceback" not in output, f"{name}:\n{output}"
    assert runs["migrate"].returncode == 0, runs["migrate"].stderr
    assert runs["sql"].returncode == 0, runs["sql"].stderr
    assert runs["sql, refused"].returncode == 1
    assert "readonly" in runs["sql, refused"].stderr.lower(), runs["sql, refused"].stderr
