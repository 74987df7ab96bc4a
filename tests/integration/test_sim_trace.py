"""`pipeline sim --trace` on the real broker: replayed trajectories as events, labels, feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.stream.em import normalize_answer
from schemas import EMLabel, InferenceEvent
from schemas.trajectory import TrajectoryRecord
from tests.integration.support import read_values, run_cli

pytestmark = pytest.mark.integration


def _record(rid: str, segment: str, confidence: list[float], answers: list[str]) -> str:
    return TrajectoryRecord.model_validate(
        {
            "request_id": rid,
            "segment": segment,
            "gold": ["42", "forty-two"],
            "tokens_full": 8 * len(answers) + 3,
            "final_answer": answers[-1],
            "checkpoints": [
                {"tokens": 8 * (i + 1), "confidence": c, "answer": a}
                for i, (c, a) in enumerate(zip(confidence, answers, strict=True))
            ],
            "probe_tokens": 5,
            "tokens_prompt": 30,
            "model": "trace-model",
            "secs": 0.4,
        }
    ).to_line()


RECORDS = [
    _record("a", "demo/arith/short", [0.4, 0.7, 0.9], ["1", "42", "42"]),
    _record("b", "demo/facts/short", [0.2, 0.3], ["x", "43"]),
    _record("c", "capitals", [0.95, 0.6, 0.99, 0.97], ["42", "42", "42", "42"]),
]


def test_sim_trace_sends_replayed_events_with_trajectories_and_gold_labels(
    isolated: Settings, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(RECORDS) + "\n")
    records = [TrajectoryRecord.from_line(line) for line in RECORDS]
    by_shape = {(r.segment_value().key(), r.tokens_full): r for r in records}

    done = run_cli(
        isolated, "sim", "--trace", str(trace), "--nodes", "2", "--rate", "100",
        "--duration", "4", "--linger", "10", "--seed", "5", "--run-id", "tracerun",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"replaying 3 trajectories of {trace}" in done.stdout
    values = read_values(isolated.kafka, "inference-events")
    events = [InferenceEvent.model_validate_json(v) for v in values]
    assert len(events) >= 350
    assert all(e.request_id.startswith("tracerun-") for e in events)
    assert len({e.request_id for e in events}) == len(events)  # fresh ids, records reused
    assert {e.model for e in events} == {"trace-model"}
    assert {e.segment.key() for e in events} == {
        "demo/arith/short", "demo/facts/short", "default/capitals/short"
    }  # fmt: skip
    explored = [e for e in events if e.exploration]
    assert explored, "the default policy explores 5% of requests"
    for event in explored:
        source = by_shape[(event.segment.key(), event.tokens_generated)]
        assert event.trajectory == source.checkpoints
        assert event.answer == source.final_answer
        assert event.tokens_probe == 5 * len(source.checkpoints)
        assert event.stop_reason == "natural_end"
    # The packaged default never stops early: production requests run to the end, unprobed.
    served = [e for e in events if not e.exploration]
    assert {(e.stop_reason, e.tokens_probe, e.trajectory) for e in served} == {
        ("natural_end", 0, None)
    }
    assert {e.tokens_generated for e in served} <= {r.tokens_full for r in records}

    labels = [EMLabel.model_validate_json(v) for v in read_values(isolated.kafka, "em-labels")]
    # 2% are lost, and a reordered label can wait up to 30 s, past the 10 s linger.
    assert len({label.request_id for label in labels}) >= 0.8 * len(events)
    golds = {normalize_answer(g) for label in labels for g in label.gold_answers or ()}
    assert golds == {"42", "fortytwo"}
    feedback = read_values(isolated.kafka, "user-feedback")
    assert all(json.loads(v)["request_id"].startswith("tracerun-") for v in feedback)
    assert feedback
