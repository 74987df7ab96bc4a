"""The pyfunc policy model, the Pareto plot and the run's names, without a server."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from pipeline.registry.draft import Frontier, PolicyDraft, ReviewDecision
from pipeline.registry.plot import chosen_point, write_pareto_png
from pipeline.registry.policies import run_metrics, run_params
from pipeline.registry.policy_model import PolicyModel, lookup
from schemas import PolicyBody, SegmentPolicy

BODY = PolicyBody(
    segments={
        "global": SegmentPolicy(
            thresholds={"normal": 0.9, "peak": 0.8}, min_tokens=16, token_budget=512
        ),
        "qa": SegmentPolicy(thresholds={"normal": 0.85}, min_tokens=8, token_budget=512),
        "acme/qa/short": SegmentPolicy(
            thresholds={"normal": 0.7, "offpeak": 0.95},
            min_tokens=4,
            token_budget=256,
            schedule=((100, 0.6),),
        ),
    },
    exploration_share=0.05,
)


@pytest.mark.parametrize(
    ("segment", "mode", "tokens", "key", "threshold"),
    [
        ("acme/qa/short", "normal", 10, "acme/qa/short", 0.7),
        ("acme/qa/short", "offpeak", 10, "acme/qa/short", 0.95),
        ("acme/qa/short", "peak", 10, "acme/qa/short", 0.7),  # no peak: normal
        ("acme/qa/short", "normal", 150, "acme/qa/short", 0.6),  # schedule step
        ("other/qa/long", "normal", 10, "qa", 0.85),  # falls back to the task
        ("other/chat/long", "peak", 20, "global", 0.8),
        ("qa", "normal", 8, "qa", 0.85),
        ("global", "whatever", 20, "global", 0.9),  # unknown mode reads as normal
        ("acme/qa/short", "normal", 3, "acme/qa/short", None),  # before min_tokens
    ],
)
def test_lookup_follows_the_node_fallback_order(
    segment: str, mode: str, tokens: int, key: str, threshold: float | None
) -> None:
    assert lookup(BODY, segment, mode, tokens) == (key, threshold)


def test_predict_answers_a_frame_row_by_row(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(BODY.model_dump_json())
    model = PolicyModel()
    model.load_context(SimpleNamespace(artifacts={"policy": str(policy)}))
    frame = pd.DataFrame(
        {"segment": ["acme/qa/short", "x/y/long"], "load_mode": ["normal"] * 2, "tokens": [2, 40]}
    )
    out = model.predict(None, frame)
    assert list(out.columns) == ["threshold", "policy_key"]
    assert math.isnan(out["threshold"][0])
    assert out["threshold"][1] == 0.9
    assert list(out["policy_key"]) == ["acme/qa/short", "global"]
    with pytest.raises(ValueError, match="missing input columns"):
        model.predict(None, frame.drop(columns=["tokens"]))


def test_the_plot_is_a_png_with_the_chosen_point(tmp_path: Path) -> None:
    frontier = Frontier([(0.9, 0.1, 0.0), (0.8, 0.2, 0.01), (0.7, 0.3, 0.04)], chosen=0.8)
    assert chosen_point(frontier) == (0.01, 0.2)
    assert chosen_point(Frontier([(0.9, 0.1, 0.0)])) is None
    many = {f"t{i}/qa/short": frontier for i in range(50)}
    path = write_pareto_png({"global": frontier, **many}, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = write_pareto_png({}, tmp_path / "empty.png")
    assert empty.stat().st_size > 0


def test_run_metrics_are_sanitized_and_per_segment_and_finite() -> None:
    proposal = PolicyDraft(
        policy_name="default",
        body=BODY,
        review=ReviewDecision(auto_approve=False, reason="x"),
        metrics={"tokens saved:total": 0.3, "bad": float("nan")},
        segment_metrics={"acme/qa/short": {"em_drop_bound": 0.02, "n": 1500}},
        params={"epsilon": 0.05, "note": "x" * 7000},
    )
    assert run_metrics(proposal) == {
        "tokens saved_total": 0.3,
        "segment/acme/qa/short/em_drop_bound": 0.02,
        "segment/acme/qa/short/n": 1500.0,
    }
    params = run_params(proposal.params)
    assert params["epsilon"] == "0.05"
    assert len(params["note"]) == 6000
