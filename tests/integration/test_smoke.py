"""The smoke round trip through real Kafka, the chdb warehouse and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.config import Settings
from pipeline.registry.client import connect as mlflow_connect
from pipeline.smoke import SMOKE_MODEL, run_smoke
from pipeline.warehouse.client import connect as ch_connect

pytestmark = pytest.mark.integration


def test_round_trip_reaches_every_service(isolated: Settings) -> None:
    report = run_smoke(isolated)
    assert [name for name, _ in report.steps] == ["kafka", "contract", "clickhouse", "mlflow"]
    client = ch_connect(isolated)
    try:
        rows = client.query(
            "SELECT node_id, tokens_generated, threshold, src_topic FROM inference_events FINAL "
            "WHERE request_id = {rid:String}",
            parameters={"rid": report.request_id},
        ).result_rows
    finally:
        client.close()
    assert len(rows) == 1
    node_id, tokens, threshold, topic = rows[0]
    assert (node_id, tokens, topic) == ("smoke-node", 17, isolated.topic("inference-events"))
    assert threshold == pytest.approx(0.9)
    ml = mlflow_connect(isolated.mlflow)
    versions = ml.search_model_versions(f"name='{SMOKE_MODEL}'")
    runs = {v.run_id for v in versions}
    assert any(report.request_id in ml.get_run(r).info.run_name for r in runs)


def test_cli_smoke_and_sql(stack_env: dict[str, str]) -> None:
    cli = [sys.executable, "-m", "pipeline.cli"]
    done = subprocess.run(
        [*cli, "smoke"], env=stack_env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round trip of smoke-" in done.stdout
    query = "SELECT count() AS n FROM inference_events WHERE node_id = 'smoke-node'"
    out = subprocess.run(
        [*cli, "sql", query, "--format", "JSONEachRow"],
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert int(json.loads(out.stdout.splitlines()[0])["n"]) >= 1


def test_cli_sql_refuses_writes(stack_env: dict[str, str]) -> None:
    cli = [sys.executable, "-m", "pipeline.cli"]
    for statement in (
        "DROP TABLE inference_events",
        "INSERT INTO inference_events (event_id) VALUES ('x')",
    ):
        out = subprocess.run(
            [*cli, "sql", statement], env=stack_env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode != 0
        assert "readonly" in (out.stderr + out.stdout).lower()
