"""`pipeline capture`: question parsing; the real model (SmolLM2, llama.cpp) on a few questions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.serve.capture import (
    SYSTEM_PROMPT,
    QuestionFileError,
    capture,
    done_ids,
    parse_question,
    pending,
    read_questions,
)
from pipeline.serve.engine import LlamaEngine
from pipeline.serve.model import DEFAULT_MODEL_NAME, default_model_path
from schemas.trajectory import TrajectoryRecord

REPO = Path(__file__).resolve().parents[2]
QUESTIONS: list[dict[str, object]] = [
    {"id": "q-add", "segment": "demo/arith/short", "question": "What is 2 + 3?", "gold": ["5"]},
    {"id": "q-cap", "segment": "capitals", "question": "What is the capital of France?",
     "gold": "Paris"},
    {"id": "q-leg", "segment": "demo/facts", "question": "How many legs does a spider have?",
     "gold": ["8", "eight"]},
]  # fmt: skip
MAX_TOKENS = 24
CHECK_EVERY = 4


def write_questions(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "capture", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip


def test_questions_parse_with_short_keys_and_a_single_gold(tmp_path: Path) -> None:
    questions = read_questions(write_questions(tmp_path / "q.jsonl", QUESTIONS))
    assert [q.id for q in questions] == ["q-add", "q-cap", "q-leg"]
    assert questions[1].gold == ("Paris",)
    assert questions[2].gold == ("8", "eight")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "a", "segment": "x", "question": "q"', "not JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"id": "a", "segment": "x", "question": "q", "gold": []}', "gold must be"),
        ('{"id": "a", "segment": "x", "question": "", "gold": "g"}', "non-empty strings"),
        ('{"id": "a", "segment": "a/b/c/d", "question": "q", "gold": "g"}', "4 parts"),
        ('{"id": "a", "segment": "t/x/huge", "question": "q", "gold": "g"}', "huge"),
    ],
)
def test_a_malformed_question_names_its_line(line: str, reason: str) -> None:
    with pytest.raises(QuestionFileError, match=reason) as caught:
        parse_question(line, "q.jsonl line 7")
    assert str(caught.value).startswith("q.jsonl line 7: ")


def test_a_repeated_id_is_refused(tmp_path: Path) -> None:
    path = write_questions(tmp_path / "q.jsonl", [QUESTIONS[0], QUESTIONS[0]])
    with pytest.raises(QuestionFileError, match="line 2: id 'q-add' appears twice"):
        read_questions(path)


def test_the_cli_reports_a_malformed_line_in_one_error_line(tmp_path: Path) -> None:
    path = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    with path.open("a") as handle:
        handle.write('{"id": "q4", "segment": "demo/arith/short", "question": 3, "gold": "3"}\n')

    done = run_cli(str(path), "--out", str(tmp_path / "out.jsonl"))

    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {path} line 4: ")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    yield LlamaEngine(default_model_path(), check_every=CHECK_EVERY, n_threads=1)


@pytest.mark.slow
def test_the_real_model_writes_valid_trajectory_records(
    engine: LlamaEngine, tmp_path: Path
) -> None:
    questions = read_questions(write_questions(tmp_path / "q.jsonl", QUESTIONS))
    out = tmp_path / "out.jsonl"

    records = list(capture(engine, questions, out, max_tokens=MAX_TOKENS, model="smol"))

    lines = out.read_text().splitlines()
    assert [TrajectoryRecord.from_line(line) for line in lines] == records
    assert [r.request_id for r in records] == ["q-add", "q-cap", "q-leg"]
    for record, question in zip(records, questions, strict=True):
        assert record.gold == question.gold
        assert record.question == question.question
        assert record.model == "smol"
        assert 1 <= record.tokens_full <= MAX_TOKENS
        assert record.tokens_prompt is not None
        assert record.tokens_prompt > len(SYSTEM_PROMPT.split())  # the system prompt is in
        assert record.probe_tokens > 0
        assert record.secs is not None
        assert record.secs > 0
        points = [p.tokens for p in record.checkpoints]
        if record.tokens_full >= CHECK_EVERY:  # a checkpoint every CHECK_EVERY tokens
            assert points[: record.tokens_full // CHECK_EVERY] == list(
                range(CHECK_EVERY, record.tokens_full + 1, CHECK_EVERY)
            )
        else:  # shorter than one spacing: the end is the one point
            assert points == [record.tokens_full]
    assert records[1].segment_value().key() == "default/capitals/short"


@pytest.mark.slow
def test_capture_resumes_by_id_and_recaptures_a_cut_line(tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    out = tmp_path / "out.jsonl"
    common = ("--out", str(out), "--max-tokens", "16", "--check-every", "8", "--threads", "1")

    first = run_cli(str(questions), *common, "--limit", "1")
    assert first.returncode == 0, first.stderr
    assert done_ids(out) == {"q-add"}
    with out.open("a") as handle:  # a capture killed mid-line
        handle.write('{"request_id": "q-cap", "segm')

    second = run_cli(str(questions), *common)
    assert second.returncode == 0, second.stderr
    assert "1 already in" in second.stdout
    records = [TrajectoryRecord.from_line(line) for line in out.read_text().splitlines()]
    assert [r.request_id for r in records] == ["q-add", "q-cap", "q-leg"]
    assert {r.model for r in records} == {DEFAULT_MODEL_NAME}

    third = run_cli(str(questions), *common)
    assert third.returncode == 0, third.stderr
    assert "nothing to capture" in third.stdout
    assert len(out.read_text().splitlines()) == 3
    assert pending(read_questions(questions), done_ids(out)) == []
