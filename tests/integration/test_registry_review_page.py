"""An optimizer's proposal on the real MLflow: its review page, description and `policy show`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest

from pipeline.config import Settings
from pipeline.controller.handover import to_registry
from pipeline.optimizer import ExplorationBatch, Trajectory, load_spec, optimize
from pipeline.registry.policies import register_proposal
from pipeline.registry.review_page import verdict
from pipeline.registry.versions import get_version
from pipeline.sim import sample_segment, scenario
from tests.integration._control import policy_cli

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[2] / "policies" / "earlystop.yaml"
SIZES = {"acme/qa/short": 3000, "acme/math/short": 1500, "globex/qa/long": 200}


def _batch(key: str, n: int) -> ExplorationBatch:
    return ExplorationBatch.from_trajectories(
        Trajectory(lat.tokens, lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1])
        for lat in sample_segment(scenario("standard"), key, 5, n)
    )


def test_a_proposal_logs_its_review_page_and_its_verdict_is_the_description(
    isolated: Settings, ml: Any, tmp_path: Path
) -> None:
    spec = load_spec(SPEC)
    proposal = optimize(spec, {key: _batch(key, n) for key, n in SIZES.items()})
    draft = to_registry(proposal, spec)
    assert draft.facts is not None and not draft.review.auto_approve
    model_name = f"test-review-{uuid.uuid4().hex[:12]}"

    done = register_proposal(
        ml, draft, experiment=isolated.mlflow.experiment, model_name=model_name
    )

    line = verdict(draft.facts, draft.review)
    assert line.startswith("Needs review: ")
    version = get_version(ml, model_name, done.version.version)
    first, rest = version.description.split("\n\n", 1)
    assert first == line
    assert "run artifact `review/review.html`" in rest
    logged = {a.path for a in ml.list_artifacts(done.run_id, "review")}
    assert logged == {"review/review.html", "review/review.md"}
    page = Path(
        mlflow.artifacts.download_artifacts(
            run_id=done.run_id,
            artifact_path="review/review.html",
            dst_path=str(tmp_path),
            tracking_uri=ml.tracking_uri,
        )
    ).read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert line.split(";")[0] in page
    for key in proposal.body.segments:
        assert f"<code>{key}</code>" in page

    shown = policy_cli(isolated, "show", "candidate", "--model", model_name)
    assert shown.returncode == 0, shown.stderr
    assert line in shown.stdout  # the logged Markdown, as is
    assert "## Keys that change" in shown.stdout and "review_state" in shown.stdout
    assert "params" not in shown.stdout  # the run's tables only with --details
    detailed = policy_cli(isolated, "show", "candidate", "--details", "--model", model_name)
    assert detailed.returncode == 0, detailed.stderr
    assert "spec_sha256" in detailed.stdout and line in detailed.stdout
