"""The policy registry on the real MLflow server: proposals, the pyfunc model, review commands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest

from pipeline.config import Settings
from pipeline.registry.policies import register_proposal
from pipeline.registry.versions import aliases, get_version, list_versions, load_policy
from tests.integration._control import (
    audit_events,
    mlflow_user,
    policy_cli,
    proposal,
    proposal_body,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def model_name() -> str:
    return f"test-policy-{uuid.uuid4().hex[:12]}"


def test_a_proposal_is_a_run_and_a_pending_candidate_version(
    stack: Settings, ml: Any, model_name: str
) -> None:
    done = register_proposal(
        ml, proposal(), experiment=stack.mlflow.experiment, model_name=model_name
    )

    version = done.version
    assert not done.promoted
    assert (version.version, version.status, version.review_state) == (1, "READY", "pending")
    assert aliases(ml, model_name) == {"candidate": 1}
    assert version.run_id == done.run_id
    assert version.source.startswith("models:/")
    assert version.tags["policy_name"] == "default"
    assert version.tags["proposal_reason"] == "step too large"
    run = ml.get_run(done.run_id)
    assert (
        run.info.experiment_id == ml.get_experiment_by_name(stack.mlflow.experiment).experiment_id
    )
    assert run.data.params["epsilon"] == "0.05"
    assert run.data.params["auto_approve"] == "False"
    assert run.data.metrics["n_total"] == 4200
    assert run.data.metrics["segment/acme/qa/short/em_drop_bound"] == 0.045
    # The logged model carries the run's metrics too (linked in one batch).
    (output,) = run.outputs.model_outputs
    model_metrics = {m.key: m.value for m in ml.get_logged_model(output.model_id).metrics}
    assert model_metrics == run.data.metrics
    artifacts = {a.path for a in ml.list_artifacts(done.run_id)}
    assert {"policy", "plots"} <= artifacts
    assert [a.path for a in ml.list_artifacts(done.run_id, "plots")] == ["plots/pareto.png"]
    assert [a.path for a in ml.list_artifacts(done.run_id, "policy")] == ["policy/policy.json"]
    assert load_policy(ml, version) == proposal_body()


def test_the_registered_model_loads_as_pyfunc_and_answers_thresholds(
    stack: Settings, ml: Any, model_name: str
) -> None:
    register_proposal(ml, proposal(0.8), experiment=stack.mlflow.experiment, model_name=model_name)

    model = mlflow.pyfunc.load_model(f"models:/{model_name}/1")
    answers = model.predict(
        pd.DataFrame(
            {
                "segment": ["acme/qa/short", "acme/qa/short", "other/chat/long", "global"],
                "load_mode": ["normal", "normal", "peak", "normal"],
                "tokens": [1, 10, 10, 10],
            }
        )
    )
    assert list(answers["policy_key"]) == ["acme/qa/short", "acme/qa/short", "global", "global"]
    thresholds = list(answers["threshold"])
    assert pd.isna(thresholds[0])  # before min_tokens: no early stop
    assert thresholds[1:] == pytest.approx([0.75, 0.7, 0.8])


def test_inside_the_auto_approve_bounds_a_proposal_promotes_itself(
    stack: Settings, ml: Any, model_name: str
) -> None:
    done = register_proposal(
        ml, proposal(auto=True), experiment=stack.mlflow.experiment, model_name=model_name
    )

    assert done.promoted
    tags = done.version.tags
    assert (tags["review_state"], tags["who"], tags["approved_by"]) == ("auto_approved",) + (
        "auto",
    ) * 2
    assert tags["why"] == "all segments within bounds"
    assert "promoted_at" in tags
    assert aliases(ml, model_name) == {"candidate": 1, "production": 1}


def test_with_auto_approve_switched_off_it_waits(stack: Settings, ml: Any, model_name: str) -> None:
    done = register_proposal(
        ml,
        proposal(auto=True),
        experiment=stack.mlflow.experiment,
        model_name=model_name,
        allow_auto_approve=False,
    )
    assert not done.promoted
    assert done.version.review_state == "pending"
    assert "switched off" in done.version.tags["proposal_reason"]
    assert "production" not in aliases(ml, model_name)


@pytest.fixture
def two_versions(isolated: Settings, ml: Any, model_name: str) -> Iterator[Settings]:
    """v1 auto-approved (production), v2 pending (candidate)."""
    for p in (proposal(0.8, auto=True), proposal(0.7, qa=0.6)):
        register_proposal(ml, p, experiment=isolated.mlflow.experiment, model_name=model_name)
    yield isolated


def test_review_commands_record_tags_and_audit_events(
    two_versions: Settings, ml: Any, model_name: str
) -> None:
    settings = two_versions
    listed = policy_cli(settings, "list", "--model", model_name)
    assert listed.returncode == 0, listed.stderr
    assert "pending" in listed.stdout and "auto_approved" in listed.stdout
    assert "candidate" in listed.stdout and "production" in listed.stdout

    shown = policy_cli(settings, "show", "candidate", "--model", model_name)
    assert shown.returncode == 0, shown.stderr
    for needle in ("v2", "pending", "acme/qa/short", "em_drop_bound", "epsilon", "0.6"):
        assert needle in shown.stdout, needle

    diffed = policy_cli(settings, "diff", "production", "candidate", "--model", model_name)
    assert diffed.returncode == 0, diffed.stderr
    assert "threshold.normal" in diffed.stdout and "-0.1" in diffed.stdout

    ann = mlflow_user(settings, "ann", model_name)
    missing = policy_cli(settings, "approve", "candidate", "--model", model_name)
    assert missing.returncode != 0 and "reason" in missing.stderr  # --reason is required

    approved = policy_cli(
        settings, "approve", "candidate", "--reason", "EM ok", "--model", model_name, env=ann
    )
    assert approved.returncode == 0, approved.stderr
    v2 = get_version(ml, model_name, 2)
    assert (v2.review_state, v2.tags["approved_by"], v2.tags["approve_reason"]) == (
        "approved",
        "ann",
        "EM ok",
    )
    assert "approved_at" in v2.tags and v2.tags["who"] == "ann"
    assert aliases(ml, model_name)["production"] == 2

    bob = mlflow_user(settings, "bob", model_name)
    again = policy_cli(settings, "approve", "1", "--reason", "x", "--model", model_name, env=bob)
    assert again.returncode == 1
    assert "error:" in again.stderr and "auto_approved" in again.stderr
    assert "Traceback" not in again.stderr

    events = [e for e in audit_events(settings.kafka) if e.model_name == model_name]
    assert [(e.action, e.version, e.actor) for e in events] == [("approved", 2, "ann")]
    assert events[0].details == {"previous_production": "1"}


def test_reject_drops_the_candidate_alias(two_versions: Settings, ml: Any, model_name: str) -> None:
    ann = mlflow_user(two_versions, "ann", model_name)
    done = policy_cli(
        two_versions, "reject", "2", "--reason", "too bold", "--model", model_name, env=ann
    )
    assert done.returncode == 0, done.stderr
    v2 = get_version(ml, model_name, 2)
    assert (v2.review_state, v2.tags["rejected_by"], v2.tags["reject_reason"]) == (
        "rejected",
        "ann",
        "too bold",
    )
    assert aliases(ml, model_name) == {"production": 1}
    production = policy_cli(
        two_versions, "reject", "1", "--reason", "b", "--model", model_name, env=ann
    )
    assert production.returncode == 1 and "rollback" in production.stderr
    assert [e.action for e in audit_events(two_versions.kafka)] == ["rejected"]


def test_rollback_registers_a_new_version_that_restores_the_old_policy(
    two_versions: Settings, ml: Any, model_name: str, tmp_path: Path
) -> None:
    settings = two_versions
    ann, bob = (mlflow_user(settings, name, model_name) for name in ("ann", "bob"))
    policy_cli(settings, "approve", "2", "--reason", "go", "--model", model_name, env=ann)

    done = policy_cli(settings, "rollback", "--reason", "EM fell", "--model", model_name, env=bob)

    assert done.returncode == 0, done.stderr
    assert "new v3 restores the policy of v1" in done.stdout
    versions = {r.version: r for r in list_versions(ml, model_name)}
    assert aliases(ml, model_name)["production"] == 3
    v2, v3 = versions[2], versions[3]
    assert (v2.review_state, v2.tags["rolled_back_by"], v2.tags["replaced_by"]) == (
        "rolled_back",
        "bob",
        "3",
    )
    assert (v3.tags["rollback_of"], v3.tags["restores"], v3.tags["who"]) == ("2", "1", "bob")
    assert v3.tags["why"] == "EM fell" and v3.review_state == "approved"
    assert load_policy(ml, v3) == load_policy(ml, versions[1]) == proposal_body(0.8)
    run = ml.get_run(v3.run_id)
    assert run.data.metrics["segment/global/n"] == 3000  # the restored version's metrics
    assert "plots/pareto.png" in {a.path for a in ml.list_artifacts(v3.run_id, "plots")}
    events = audit_events(settings.kafka)
    assert [(e.action, e.version) for e in events] == [("approved", 2), ("rolled_back", 3)]
    assert events[1].details == {"rollback_of": "2", "restores": "1"}
