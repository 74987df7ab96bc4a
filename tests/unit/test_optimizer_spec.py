"""The policy spec: the shipped file loads; every invalid field is named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.optimizer import SpecError, load_spec, parse_spec
from tests.unit._optimizer_data import POLICIES, SPEC_PATH, spec_data, spec_with


def test_the_shipped_spec_loads_with_the_safe_default() -> None:
    spec = load_spec(SPEC_PATH)
    # The policy name nodes follow by default (PIPELINE_NODE__POLICY_NAME).
    assert spec.name == "default"
    grid = spec.thresholds()
    assert grid[0] == 0.5 and grid[-1] == 1.0 and len(grid) == 51
    assert 0.9 in grid  # rounded: no 0.9000000000000001
    default = json.loads((POLICIES / "default_policy.json").read_text())
    assert spec.default_policy.model_dump(mode="json") == default
    assert spec.load_modes.offpeak.epsilon < spec.load_modes.peak.epsilon


def test_spec_error_is_a_pipeline_error() -> None:
    assert issubclass(SpecError, PipelineError)


def _broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(spec_data())
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("risk", "delta"), 0.7, "risk.delta"),
        (("risk", "delta"), 0.0, "risk.delta"),
        (("risk", "split"), "holm", "risk.split"),
        (("risk", "p_value"), "t-test", "risk.p_value"),
        (("load_modes", "peak", "epsilon"), 0.005, "load_modes"),
        (("load_modes", "normal", "epsilon"), 0.9, "load_modes.normal.epsilon"),
        (("min_samples",), 0, "min_samples"),
        (("max_step",), 1.5, "max_step"),
        (("grid", "start"), 0.995, "grid"),
        (("grid", "step"), 0.0, "grid.step"),
        (("exploration_share",), 0.7, "exploration_share"),
        (("exploration_floor",), 0.06, "exploration_floor exceeds exploration_share"),
        (("exploration_floor",), -0.1, "exploration_floor"),
        (("canary", "share"), 1.2, "canary.share"),
        (("canary", "max_samples"), 10, "canary"),
        (("guardrails", "em_max_drop"), 0.0, "guardrails.em_max_drop"),
        (("auto_approve", "max_step"), 0.5, "auto_approve.max_step exceeds max_step"),
        (("segments", "levels"), ["task", "segment", "global"], "segments.levels"),
        (("segments", "levels"), ["segment", "task"], "segments.levels"),
        (("segments", "settings"), {"qa": {"min_tokens": 1, "token_budget": 9}}, "global"),
        (("segments", "settings", "global", "min_tokens"), 9000, "min_tokens exceeds"),
        (("segments", "settings", "a/b"), {"min_tokens": 1, "token_budget": 9}, "a/b"),
        (("tolerance", "tenants", "bad/name"), 0.01, "tolerance.tenants"),
        (("tolerance", "segments", "qa"), {"rush": 0.01}, "tolerance.segments.qa"),
        (("name",), "has space", "name"),
        (("surprise",), 1, "surprise"),
    ],
)
def test_invalid_fields_are_named(path: tuple[str, ...], value: Any, named: str) -> None:
    with pytest.raises(SpecError, match="invalid policy spec") as caught:
        parse_spec(_broken(path, value))
    assert named in str(caught.value)


def test_the_default_policy_must_never_stop_early() -> None:
    data = spec_data()
    data["default_policy"]["segments"]["global"]["thresholds"]["peak"] = 0.9
    with pytest.raises(SpecError, match="default_policy.*1.0"):
        parse_spec(data)


def test_the_default_policy_is_validated_as_a_policy_body() -> None:
    data = spec_data()
    del data["default_policy"]["segments"]["global"]
    with pytest.raises(SpecError, match="default_policy"):
        parse_spec(data)


def test_missing_or_malformed_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read policy spec"):
        load_spec(tmp_path / "absent.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(listing)
    data = spec_data()
    data["default_policy"] = "nowhere.json"
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"default_policy: cannot read .*nowhere\.json"):
        load_spec(orphan)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="cannot read policy spec"):
        load_spec(broken)


def test_epsilon_precedence_segment_then_tenant_then_task_then_mode() -> None:
    spec = spec_with(
        tolerance={
            "tenants": {"acme": {"normal": 0.011}},
            "segments": {"acme/qa/long": 0.005, "qa": {"peak": 0.033, "normal": 0.022}},
        }
    )
    assert spec.epsilon("acme/qa/long", "offpeak") == 0.005  # a bare number: every mode
    assert spec.epsilon("acme/qa/short", "normal") == 0.011  # tenant before task
    assert spec.epsilon("acme/qa/short", "peak") == 0.033  # tenant has no peak: task
    assert spec.epsilon("acme/qa/short", "offpeak") == 0.01  # nobody: the mode
    assert spec.epsilon("globex/qa/short", "normal") == 0.022
    assert spec.epsilon("qa", "normal") == 0.022
    assert spec.epsilon("global", "peak") == 0.04


def test_settings_are_looked_up_most_specific_first() -> None:
    spec = spec_with(
        segments={
            "settings": {
                "global": {"min_tokens": 32, "token_budget": 4096},
                "qa": {"min_tokens": 16, "token_budget": 1024},
                "acme/qa/long": {"min_tokens": 64, "token_budget": 2048},
            }
        }
    )
    assert spec.settings_for("acme/qa/long").min_tokens == 64
    assert spec.settings_for("acme/qa/short").token_budget == 1024
    assert spec.settings_for("acme/math/short").min_tokens == 32
    assert spec.settings_for("global").token_budget == 4096


def test_a_custom_grid_always_ends_at_one() -> None:
    spec = spec_with(grid={"start": 0.8, "stop": 0.9, "step": 0.05})
    assert spec.thresholds() == (0.8, 0.85, 0.9, 1.0)


def test_the_exploration_ceiling_is_at_least_the_share() -> None:
    with pytest.raises(SpecError, match="exploration_ceiling is below exploration_share"):
        parse_spec(_broken(("exploration_ceiling",), 0.01))
