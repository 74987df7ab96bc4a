"""`pipeline calibrate --register` on the real stack: a pending `candidate` for a reviewer."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.registry.versions import aliases, get_version, load_policy
from schemas import PolicyBody
from tests.integration._control import audit_events
from tests.integration.support import REPO, free_port, run_cli

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "data/real/real_trajectories_sample.jsonl"


def spec_named(folder: Path, policy: str) -> Path:
    """The shipped spec under another policy name, its default policy beside it."""
    text = (REPO / "policies" / "earlystop.yaml").read_text()
    assert "\nname: default\n" in text
    spec = folder / "spec.yaml"
    spec.write_text(text.replace("\nname: default\n", f"\nname: {policy}\n"))
    (folder / "default_policy.json").write_text((REPO / "policies/default_policy.json").read_text())
    return spec


def test_register_makes_a_pending_candidate_holding_the_calibrated_policy(
    isolated: Settings, ml: Any, tmp_path: Path
) -> None:
    policy = f"calib-{uuid.uuid4().hex[:10]}"
    spec = spec_named(tmp_path, policy)
    args = ("--spec", str(spec), "--epsilon", "0.1", "--min-samples", "1")

    done = run_cli(isolated, "calibrate", str(SAMPLE), *args, "--register", "--json")

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # only the results: MLflow's own lines go to stderr
    assert data["registered_version"] == 1
    body = PolicyBody.model_validate(data["policy"])
    assert body.segments["math/div/short"].thresholds["normal"] < 1.0
    model = isolated.control.model_name(policy)
    assert aliases(ml, model) == {"candidate": 1}  # not production: a reviewer approves it
    version = get_version(ml, model, 1)
    assert (version.status, version.review_state) == ("READY", "pending")
    assert (
        "offline calibration from real_trajectories_sample.jsonl" in version.tags["proposal_reason"]
    )
    assert load_policy(ml, version) == body
    run = ml.get_run(version.run_id)
    assert run.data.params["origin"] == "calibrate"
    assert run.data.params["trajectories"] == "90"
    assert run.data.params["auto_approve"] == "False"
    div = data["segments"]["math/div/short"]["normal"]
    assert run.data.metrics["segment/math/div/short/normal_own_saving"] == pytest.approx(
        div["saving"]
    )
    proposed = [e for e in audit_events(isolated.kafka) if e.policy_name == policy]
    assert [(e.action, e.version) for e in proposed] == [("proposed", 1)]


def test_register_with_mlflow_unreachable_is_one_line_and_registers_nothing(
    isolated: Settings, ml: Any, tmp_path: Path
) -> None:
    policy = f"calib-{uuid.uuid4().hex[:10]}"
    spec = spec_named(tmp_path, policy)
    nowhere = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "policy.json"

    done = run_cli(
        isolated,
        "calibrate",
        str(SAMPLE),
        *("--spec", str(spec), "--epsilon", "0.1", "--register", "--out", str(out)),
        env={"PIPELINE_MLFLOW__TRACKING_URI": nowhere},
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: MLflow at {nowhere} is not reachable: is `pipeline up` running? (MlflowException)"
    ]
    PolicyBody.model_validate_json(out.read_text())  # --out is written before registering
    assert ml.search_registered_models(f"name = '{isolated.control.model_name(policy)}'") == []
