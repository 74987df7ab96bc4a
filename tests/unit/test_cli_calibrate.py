"""`pipeline calibrate` on the real trajectory sample: table, --json, --out, malformed lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli._app import _register, app
from pipeline.optimizer import load_spec
from pipeline.optimizer.offline import calibrate, calibration_spec, samples_from_records
from schemas import PolicyBody
from schemas.trajectory import TrajectoryRecord

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "policies" / "earlystop.yaml"
SAMPLE = Path(__file__).resolve().parents[2] / "data/real/real_trajectories_sample.jsonl"
KEYS = {"facts/capital/short", "math/div/short", "math/sub/short", "capital", "div", "sub"}
OPTIONS = ("--spec", str(SPEC), "--epsilon", "0.1", "--min-samples", "1", "--method", "anytime")

_register()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """The real sample file (90 records of a small model), copied so a test may edit it."""
    target = tmp_path / "sample.jsonl"
    target.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def invoke(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, ["calibrate", *args], env={"COLUMNS": "250"})
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.exit_code, done.stdout


def test_the_table_shows_every_key_and_its_rule(sample: Path) -> None:
    code, out = invoke(str(sample), *OPTIONS)

    assert code == 0, out
    assert "90 trajectories" in out
    assert "anytime, signed loss, delta 0.1, min_samples 1" in out
    for key in KEYS | {"global"}:
        assert f"│ {key} " in out
    # The segments ride on the global pool's certificate (30 samples each certify nothing);
    # the capital answers end before min_tokens, so the rule saves nothing there.
    capital = next(line for line in out.splitlines() if "│ facts/capital/short" in line)
    assert "│ 0.50 " in capital and "global (pooled)" in capital and "│ 0.0% " in capital


def test_out_writes_the_policy_body_the_optimizer_certified(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "policy.json"

    code, out = invoke(str(sample), *OPTIONS, "--out", str(target))

    assert code == 0, out
    assert f"wrote the policy body to {target}" in out
    body = PolicyBody.model_validate_json(target.read_text())
    assert set(body.segments) == KEYS | {"global"}
    records = [TrajectoryRecord.from_line(line) for line in sample.read_text().splitlines()]
    spec = calibration_spec(load_spec(SPEC), epsilon=0.1, min_samples=1)
    assert body == calibrate(spec, samples_from_records(records)).body
    assert body.segments["facts/capital/short"] == body.segments["global"]


def test_json_gives_every_key_and_mode_and_the_policy(sample: Path) -> None:
    code, out = invoke(str(sample), *OPTIONS, "--delta", "0.2", "--min-tokens", "16", "--json")

    assert code == 0, out
    data = json.loads(out)
    assert (data["source"], data["trajectories"]) == (str(sample), 90)
    assert (data["method"], data["loss"], data["delta"]) == ("anytime", "signed", 0.2)
    assert data["registered_version"] is None
    assert set(data["segments"]) == KEYS | {"global"}
    body = PolicyBody.model_validate(data["policy"])
    for key, modes in data["segments"].items():
        assert set(modes) == {"offpeak", "normal", "peak"}
        for mode, row in modes.items():
            assert row["threshold"] == body.segments[key].thresholds[mode]
            assert row["min_tokens"] == 16
            assert row["epsilon"] == 0.1
            assert row["saving"] <= row["gross_saving"] + 1e-12
            assert row["em_drop_bound"] == (0.1 if row["certified"] else 0.0)
    assert data["segments"]["math/div/short"]["normal"]["samples"] == 30
    assert data["segments"]["global"]["normal"]["samples"] == 90


def test_the_shipped_spec_needs_more_samples_than_the_sample_has(sample: Path) -> None:
    code, out = invoke(str(sample), "--json")

    assert code == 0, out
    data = json.loads(out)
    assert data["min_samples"] == 400
    rows = [row for modes in data["segments"].values() for row in modes.values()]
    assert {(r["threshold"], r["certified"], r["note"]) for r in rows} == {
        (1.0, False, "too few samples to test")
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "calibrate", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip


def test_a_malformed_line_is_one_error_line_with_its_number(sample: Path) -> None:
    lines = sample.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["checkpoints"][0]["confidence"] = 1.5
    lines[2] = json.dumps(bad)
    sample.write_text("\n".join(lines) + "\n")

    done = run_cli(str(sample), *OPTIONS)

    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {sample}:3: not a trajectory record: checkpoints.0.confidence")
    assert "less than or equal to 1" in line


def test_a_line_that_is_not_json_names_its_number_too(sample: Path) -> None:
    with sample.open("a") as f:
        f.write('{"request_id": "r90", "segment": \n')

    done = run_cli(str(sample), *OPTIONS)

    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {sample}:91: not a trajectory record: Invalid JSON")


def test_a_missing_file_and_a_bad_option_are_one_line_each(tmp_path: Path) -> None:
    missing = run_cli(str(tmp_path / "none.jsonl"), "--spec", str(SPEC))
    bad = run_cli(str(SAMPLE), "--spec", str(SPEC), "--epsilon", "0.9")

    assert (missing.returncode, bad.returncode) == (1, 1)
    assert missing.stderr.strip().splitlines() == [
        f"error: cannot read trajectory file {tmp_path / 'none.jsonl'}: [Errno 2] No such file "
        f"or directory: '{tmp_path / 'none.jsonl'}'"
    ]
    (line,) = bad.stderr.strip().splitlines()
    assert "load_modes.normal.epsilon: Input should be less than or equal to 0.5" in line


def test_one_look_is_the_default_and_a_wrong_method_is_a_usage_error(sample: Path) -> None:
    code, out = invoke(
        str(sample), "--spec", str(SPEC), "--epsilon", "0.1", "--min-samples", "30", "--json"
    )
    assert code == 0, out
    data = json.loads(out)
    assert (data["method"], data["loss"]) == ("ltt", "one_sided")
    normal = data["segments"]["global"]["normal"]
    assert normal["certified"] and normal["threshold"] < 1.0
    code, out = invoke(str(sample), "--spec", str(SPEC), "--method", "signed", "--json")
    assert code == 0, out
    assert (json.loads(out)["method"], json.loads(out)["loss"]) == ("ltt", "signed")
    code, out = invoke(str(sample), "--method", "bayes")
    assert code == 2  # a usage error, before any work


def test_min_tokens_takes_candidates_and_refuses_anything_else(sample: Path) -> None:
    code, out = invoke(
        str(sample), "--spec", str(SPEC), "--epsilon", "0.1", "--min-samples", "30",
        "--min-tokens", "8,32", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    chosen = {modes["normal"]["min_tokens"] for modes in data["segments"].values()}
    assert chosen <= {8, 32}
    bad = run_cli(str(sample), "--spec", str(SPEC), "--min-tokens", "8,x")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: --min-tokens must be a count or comma-separated counts (8,16,32), got '8,x'"
    ]
