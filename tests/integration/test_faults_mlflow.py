"""MLflow down: the controller skips cycles and recovers; nothing half-registered is published.

Each test runs its own MLflow server (``pipeline up`` restricted to MLflow,
in a private state folder, on a free port) so it can stop and restart it
without disturbing the session stack, whose Kafka and ClickHouse it uses.

Already covered elsewhere: the publisher reports a pass and retries when
MLflow is unreachable (test_publisher_nodes.py::
test_with_mlflow_or_kafka_away_a_pass_reports_and_the_next_one_publishes),
and a pending (unapproved) version is never published even when
``production`` points at it (test_publisher_nodes.py::
test_a_pending_version_is_never_published_even_if_production_points_at_it).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.service import Publisher
from pipeline.registry.client import connect as mlflow_connect
from pipeline.registry.client import ensure_experiment
from pipeline.registry.policies import register_proposal
from tests.integration._control import control_updates, proposal
from tests.integration.support import (
    PrivateStack,
    cli_process,
    private_service,
    write_policy_spec,
)

pytestmark = pytest.mark.integration

KEY = "faults-mlflow-key"


@pytest.fixture
def private(isolated: Settings, tmp_path: Path) -> Iterator[PrivateStack]:
    """The session stack's Kafka and ClickHouse with an MLflow server of this test only."""
    with private_service(isolated, tmp_path / "private", "mlflow") as server:
        yield server


def set_status(server: PrivateStack, model: str, version: int, status: str) -> None:
    """Put a model version in a registration state, as an asynchronous store would."""
    database = server.settings.state_dir / "mlflow" / "mlflow.db"
    with sqlite3.connect(database) as db:
        changed = db.execute(
            "UPDATE model_versions SET status = ? WHERE name = ? AND version = ?",
            (status, model, version),
        ).rowcount
    assert changed == 1


def publisher_of(settings: Settings, model: str) -> Publisher:
    """A publisher of ``model`` as the policy ``default``, without an audit log."""
    control = ControlSettings.model_validate(
        {"models": {"default": model}, "signing_key_id": "k", "signing_key": KEY,
         "algorithm": "hmac-sha256",
         "bootstrap_timeout_s": 20}
    )  # fmt: skip
    return Publisher(settings.kafka, settings.mlflow, control)


def test_the_publisher_waits_for_a_version_that_is_not_ready(private: PrivateStack) -> None:
    settings = private.settings
    model = f"test-ready-{uuid.uuid4().hex[:12]}"
    ml = mlflow_connect(settings.mlflow)
    register_proposal(
        ml, proposal(auto=True), experiment=settings.mlflow.experiment, model_name=model
    )
    publisher = publisher_of(settings, model)
    try:
        for status in ("PENDING_REGISTRATION", "FAILED_REGISTRATION"):
            set_status(private, model, 1, status)
            outcome = publisher.run_once()[0]
            assert (outcome.status, outcome.version) == ("wait", 1), outcome.detail
            assert status in outcome.detail
            assert control_updates(settings.kafka) == []
        set_status(private, model, 1, "READY")
        outcome = publisher.run_once()[0]
        assert (outcome.status, outcome.version) == ("published", 1), outcome.detail
    finally:
        publisher.close()
    updates = control_updates(settings.kafka)
    assert [u.version for u in updates] == [1]


def test_a_version_registered_without_its_review_tags_is_never_published(
    private: PrivateStack,
) -> None:
    # What a registration cut off by MLflow going down leaves: a version, no review state.
    settings = private.settings
    model = f"test-half-{uuid.uuid4().hex[:12]}"
    ml = mlflow_connect(settings.mlflow)
    ml.create_registered_model(model)
    # In the pipeline's experiment: the service account reads "Default" only (MLflow auth).
    run = ml.create_run(ensure_experiment(ml, settings.mlflow.experiment))
    ml.create_model_version(model, f"runs:/{run.info.run_id}/policy", run.info.run_id)
    ml.set_registered_model_alias(model, "production", "1")
    publisher = publisher_of(settings, model)
    try:
        for _ in range(2):
            outcome = publisher.run_once()[0]
            assert (outcome.status, outcome.version) == ("refused", 1)
            assert "untagged" in outcome.detail
    finally:
        publisher.close()
    assert control_updates(settings.kafka) == []


class Lines:
    """A process's output lines, collected by a thread, to wait on."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait(self, want: Callable[[str], bool], start: int, timeout_s: float) -> int:
        """Index of the first line from ``start`` on that ``want`` accepts."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i in range(start, len(self.lines)):
                if want(self.lines[i]):
                    return i
            assert self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.2)
        pytest.fail(f"timed out; output so far:\n{''.join(self.lines)}")


@pytest.mark.slow
def test_the_controller_skips_cycles_while_mlflow_is_down_and_recovers(
    private: PrivateStack, tmp_path: Path
) -> None:
    settings = private.settings
    policy = f"es{uuid.uuid4().hex[:10]}"
    spec = write_policy_spec(tmp_path, policy)
    env = {
        "PIPELINE_CONTROL__ALGORITHM": "hmac-sha256",
        "PIPELINE_CONTROL__SIGNING_KEY": KEY,
        "PIPELINE_CONTROL__POLL_INTERVAL_S": "0.5",
        "PIPELINE_CONTROLLER__PERIOD_S": "2",
    }
    private.stop("mlflow")  # MLflow is away when the controller starts
    proc = cli_process(settings, "controller", "--spec", str(spec), env=env)
    out = Lines(proc)
    try:
        down = out.wait(lambda s: "optimize: skipped" in s, 0, 90)
        assert "MLflow" in out.lines[down] and "not reachable" in out.lines[down]
        time.sleep(5)  # more periods pass while it is away: still running, nothing repeated
        assert proc.poll() is None
        assert sum("optimize: skipped" in s for s in out.lines) == 1  # one line per outage

        private.start("mlflow")
        back = out.wait(lambda s: " optimize: " in s and "skipped" not in s, down, 90)
        assert "samples in" in out.lines[back], out.lines[back]  # it read ClickHouse and MLflow

        private.stop("mlflow")  # and again, after it has worked
        again = out.wait(lambda s: "optimize: skipped" in s, back, 90)
        private.start("mlflow")
        out.wait(lambda s: " optimize: " in s and "skipped" not in s, again, 90)
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = "".join(out.lines)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert output.count("optimize: skipped") == 2, output  # one line per outage
