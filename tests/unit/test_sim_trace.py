"""The trace-driven fleet, pure: replay decisions, resampling, events, labels, yardsticks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_settings
from pipeline.demo.acceptance import figures
from pipeline.demo.config import DemoConfig, write_spec
from pipeline.demo.run import DemoResult
from pipeline.demo.truth import trace_yardsticks
from pipeline.errors import TrajectoryFileError
from pipeline.node.controller import Controller
from pipeline.node.decision import RequestPlan, Rule, buckets
from pipeline.node.emitter import EmitterStats
from pipeline.node.snapshot import compile_snapshot
from pipeline.sim import FeedbackConfig, LabelConfig
from pipeline.sim.oracle import em_curve
from pipeline.sim.runner import FleetRunner, RunConfig
from pipeline.sim.trace import (
    TraceRequest,
    TraceSet,
    read_trace,
    replay,
    serve_trace,
    trace_labels,
    trace_latent,
)
from schemas import EMLabel, InferenceEvent, PolicyBody, SegmentPolicy
from schemas.trajectory import TrajectoryRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class MemorySink:
    """An in-memory producer (the runner's threads append)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []

    def emit_bytes(self, request_id: str, payload: bytes) -> bool:
        self.items.append((request_id, payload))
        return True

    def stats(self) -> EmitterStats:
        return EmitterStats(sent=len(self.items), failed=0, dropped=0, queued=0)

    def close(self, timeout: float | None = None) -> EmitterStats:
        return self.stats()


class FakeNode:
    def __init__(self) -> None:
        self.controller = controller(0.85, min_tokens=32)
        self.emitter = MemorySink()

    def start(self) -> object:
        return None

    def close(self, timeout: float = 10.0) -> None:
        pass


def record(
    confidence: tuple[float, ...] = (0.3, 0.6, 0.9, 0.95),
    answers: tuple[str, ...] = ("1", "41", "42", "42"),
    *,
    tokens_full: int = 37,
    final: str = "42",
    rid: str = "q1",
    segment: str = "demo/arith/short",
    probe: int = 7,
) -> TrajectoryRecord:
    return TrajectoryRecord.model_validate(
        {
            "request_id": rid,
            "segment": segment,
            "gold": ["42"],
            "tokens_full": tokens_full,
            "final_answer": final,
            "checkpoints": [
                {"tokens": 8 * (i + 1), "confidence": c, "answer": a}
                for i, (c, a) in enumerate(zip(confidence, answers, strict=True))
            ],
            "probe_tokens": probe,
            "tokens_prompt": 40,
            "model": "tiny",
            "secs": 0.5,
        }
    )


def plan(threshold: float, *, min_tokens: int = 0, budget: int = 4096) -> RequestPlan:
    return RequestPlan(
        request_id="r",
        policy_name="p",
        policy_version=1,
        arm="production",
        exploration=False,
        load_mode="normal",
        segment_key="demo/arith/short",
        rule=Rule(threshold=threshold, min_tokens=min_tokens, token_budget=budget),
    )


def controller(threshold: float, *, exploration: float = 0.0, min_tokens: int = 0) -> Controller:
    policy = SegmentPolicy(
        thresholds={"offpeak": threshold, "normal": threshold, "peak": threshold},
        min_tokens=min_tokens,
        token_budget=4096,
    )
    body = PolicyBody(segments={"global": policy}, exploration_share=exploration)
    return Controller(compile_snapshot(body, policy_name="p", version=3, source="broker"))


def test_a_threshold_stops_at_the_first_confident_checkpoint_with_its_answer() -> None:
    done = replay(TraceRequest.of(record()), plan(0.85), Controller())
    assert (done.tokens, done.answer, done.reason, done.stop) == (24, "42", "confident", 2)
    assert done.probes == 3
    assert done.tokens_probe == 3 * 7
    assert done.correct
    assert done.early


def test_an_early_stop_can_serve_a_wrong_trial_answer() -> None:
    done = replay(TraceRequest.of(record()), plan(0.55), Controller())
    assert (done.tokens, done.answer, done.correct) == (16, "41", False)


def test_no_probe_before_min_tokens() -> None:
    done = replay(TraceRequest.of(record()), plan(0.85, min_tokens=20), Controller())
    assert done.tokens == 24
    assert done.probes == 1  # only the checkpoint at 24 was evaluated


def test_without_a_confident_checkpoint_it_runs_to_the_natural_end() -> None:
    done = replay(TraceRequest.of(record(final="43")), plan(0.99), Controller())
    assert (done.tokens, done.answer, done.reason, done.stop) == (37, "43", "natural_end", None)
    assert done.probes == 4
    assert done.tokens_probe == 28
    assert not done.correct
    assert not done.early


def test_the_safe_default_probes_nothing() -> None:
    done = replay(TraceRequest.of(record()), plan(1.0), Controller())
    assert (done.tokens, done.reason, done.tokens_probe) == (37, "natural_end", 0)


def test_a_checkpoint_at_the_end_is_the_natural_end_not_an_early_stop() -> None:
    trace = TraceRequest.of(record((0.3, 0.99), ("7", "42"), tokens_full=16, final="42"))
    done = replay(trace, plan(0.9), Controller())
    assert (done.tokens, done.reason, done.probes) == (16, "natural_end", 1)


def test_the_budget_cuts_with_the_last_trial_answer_before_it() -> None:
    done = replay(TraceRequest.of(record()), plan(0.99, budget=20), Controller())
    assert (done.tokens, done.reason, done.answer) == (20, "budget", "41")
    assert done.tokens_full == 20


def test_exploration_events_carry_the_trajectory_and_pay_its_probes() -> None:
    traces = TraceSet.of([record()])
    index = next(i for i in range(1000) if buckets(f"sim-{i}")[0] < 0.2)
    served = serve_trace(
        controller(0.9, exploration=0.2), traces, 0, index, node_id="n", finished_at=NOW, load=0.2
    )
    event = InferenceEvent.model_validate_json(served.event.to_bytes())
    assert event.exploration
    assert event.threshold is None
    assert event.trajectory is not None
    assert [p.tokens for p in event.trajectory] == [8, 16, 24, 32]
    assert (event.tokens_generated, event.stop_reason, event.answer) == (37, "natural_end", "42")
    assert event.tokens_probe == 4 * 7
    assert event.request_id == f"sim-{index}"
    assert event.segment.key() == "demo/arith/short"


def test_production_events_report_the_stop_and_the_threshold() -> None:
    traces = TraceSet.of([record()])
    served = serve_trace(controller(0.85), traces, 0, 1, node_id="n", finished_at=NOW, load=0.5)
    event = served.event
    assert (event.stop_reason, event.threshold, event.tokens_generated) == ("confident", 0.85, 24)
    assert event.trajectory is None
    assert event.tokens_probe == 21
    assert event.policy_version == 3


def test_resampling_is_fixed_by_the_seed() -> None:
    traces = TraceSet.of([record(rid=f"q{i}") for i in range(20)])
    first = [traces.pick(7, i).record.request_id for i in range(200)]
    again = [traces.pick(7, i).record.request_id for i in range(200)]
    other = [traces.pick(8, i).record.request_id for i in range(200)]
    assert first == again
    assert first != other
    assert len(set(first)) == 20  # with replacement, every record shows up in 200 draws


def test_labels_carry_the_records_gold_answers() -> None:
    traces = TraceSet.of([record()])
    config = LabelConfig(loss=0.0, alias=0.0, verdict=0.0, duplicate=0.0)
    served = serve_trace(Controller(), traces, 0, 3, node_id="n", finished_at=NOW, load=0.5)
    (scheduled,) = trace_labels(served, config, 0)
    label: EMLabel = scheduled.message
    assert label.request_id == served.event.request_id
    assert label.gold_answers == ("42",)


def test_read_trace_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(record().to_line() + "\n\n" + '{"request_id": "x"}\n')
    with pytest.raises(TrajectoryFileError, match=r"t\.jsonl line 3"):
        read_trace(path)
    path.write_text(record().to_line() + "\n")
    assert len(read_trace(path)) == 1


def test_the_latent_ends_with_the_full_answer() -> None:
    lat = trace_latent(TraceRequest.of(record(final="43")))
    assert lat.tokens == (8, 16, 24, 32, 37)
    assert lat.correct == (False, False, True, True, False)
    cut = trace_latent(TraceRequest.of(record()), budget=20)
    assert cut.tokens == (8, 16, 20)
    assert cut.correct[-1] is False  # the answer at 16 ("41")


def test_the_oracle_curve_agrees_with_the_replay() -> None:
    records = [
        record((0.3, 0.6, 0.9, 0.95), ("1", "41", "42", "42")),
        record((0.7, 0.8, 0.85, 0.9), ("5", "42", "42", "42"), rid="q2"),
        record((0.9, 0.5, 0.5, 0.5), ("3", "42", "42", "42"), rid="q3", final="42"),
    ]
    traces = [TraceRequest.of(r) for r in records]
    for theta in (0.6, 0.75, 0.85, 0.95):
        (point,) = em_curve([trace_latent(t) for t in traces], [theta])
        done = [replay(t, plan(theta), Controller()) for t in traces]
        assert point.early_em == pytest.approx(sum(d.correct for d in done) / len(done))
        used = sum(d.tokens for d in done) / sum(r.tokens_full for r in records)
        assert point.token_saving == pytest.approx(1 - used)


def test_yardsticks_on_records() -> None:
    # Right at the end (and from 24 tokens on) in one segment; wrong at the end in the other.
    good = [record(rid=f"g{i}", probe=0) for i in range(10)]
    fickle = [
        record(rid=f"f{i}", final="43", segment="demo/facts/short", probe=0) for i in range(10)
    ]
    oracle, static = trace_yardsticks(good + fickle, 0.02, min_tokens=0)
    # Per segment: stop at 24 tokens (any threshold above 0.60) in the first, at
    # 16 in the second (its full answer is wrong anyway: a signed drop of 0).
    assert oracle.token_saving == pytest.approx((13 + 21) / 2 / 37)
    assert oracle.em_drop == pytest.approx(0.0)
    # One threshold for both: 0.60 would serve "41" to the first; at 0.61 the
    # second gains what its full answer lost (signed drop -1 on half the traffic).
    assert static.detail == "threshold 0.61"
    assert static.token_saving == pytest.approx(13 / 37)
    assert static.em_drop == pytest.approx(-0.5)
    # Confident and wrong at the first checkpoint: only an unreachable threshold is safe.
    bad = [
        record((0.95, 0.3, 0.3, 0.3), ("1", "42", "42", "42"), rid=f"b{i}", probe=0)
        for i in range(5)
    ]
    oracle, static = trace_yardsticks(bad, 0.02, min_tokens=0)
    assert oracle.token_saving == pytest.approx(0.0)
    assert static.detail == "threshold 0.96"


def test_yardsticks_are_net_of_probe_tokens() -> None:
    # 7 probe tokens per checkpoint: stopping at 24 costs 24 + 3 x 7 = 45 > 37, so the
    # first segment is best off (1.0, no probes); the second stops at 16 for 16 + 14 = 30.
    good = [record(rid=f"g{i}") for i in range(10)]
    fickle = [record(rid=f"f{i}", final="43", segment="demo/facts/short") for i in range(10)]
    oracle, static = trace_yardsticks(good + fickle, 0.02, min_tokens=0)
    assert oracle.token_saving == pytest.approx((0 + 7) / 2 / 37)
    # No single threshold below 1.0 saves anything net of its probes within epsilon.
    assert (static.detail, static.token_saving) == ("threshold 1.00", 0.0)
    bad = [record((0.95, 0.3, 0.3, 0.3), ("1", "42", "42", "42"), rid=f"b{i}") for i in range(5)]
    oracle, static = trace_yardsticks(bad, 0.02, min_tokens=0)
    assert (oracle.token_saving, static.detail) == (0.0, "threshold 1.00")


def test_a_runner_with_a_trace_replays_records() -> None:
    traces = TraceSet.of([record(), record(rid="q2", segment="demo/facts/short")])
    nodes = [FakeNode() for _ in range(2)]
    labels, feedback = MemorySink(), MemorySink()
    config = RunConfig(
        nodes=2, rate=400.0, duration_s=0.3, seed=1, run_id="tr", trace=traces, linger_s=3.0,
        labels=LabelConfig(delay_s=0.0, delay_mean_s=0.01, reorder=0.0, loss=0.0, duplicate=0.0),
        feedback=FeedbackConfig(rate=0.0),
    )  # fmt: skip
    summary = FleetRunner(config, lambda i: nodes[i], labels, feedback).run()
    events = [InferenceEvent.model_validate_json(p) for n in nodes for _, p in n.emitter.items]
    assert summary.requests == len(events) > 50
    assert {e.model for e in events} == {"tiny"}
    assert {e.segment.task for e in events} == {"arith", "facts"}
    assert summary.tokens_full == 37 * summary.requests
    assert len(labels.items) == summary.requests


def test_a_trace_demo_sets_its_yardsticks_on_the_records_and_has_no_drift(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(record(rid=f"g{i}", probe=0).to_line() + "\n" for i in range(10)))
    config = DemoConfig(duration_s=60.0, trace=path, run_id="demotest")
    assert config.min_tokens == 8
    rows = {f.name: f for f in figures(DemoResult(config, tmp_path))}
    oracle = rows["oracle saving (truth, trace records)"]
    assert oracle.value == f"{13 / 37:.1%}"  # a stop at 24 tokens (min_tokens 8, free probes)
    assert rows["drift"].value == "n/a: a trace replay has no drift"
    assert not any("drift corrected" in name for name in rows)
    spec = yaml.safe_load(write_spec(load_settings(), config, tmp_path / "run").read_text())
    assert spec["segments"]["settings"]["global"]["min_tokens"] == 8
