"""The fleet runner's pacing, accounting and clean stop, with in-memory producers.

The runner's Kafka side is the node SDK's (tested on a real broker there);
here the producers are lists, so the test needs no process.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from pipeline.node.controller import Controller
from pipeline.node.emitter import EmitterStats
from pipeline.node.snapshot import compile_snapshot
from pipeline.sim import FeedbackConfig, LabelConfig, SimError
from pipeline.sim.runner import FleetRunner, RunConfig
from schemas import EMLabel, InferenceEvent, PolicyBody, SegmentPolicy, UserFeedback


class MemorySink:
    def __init__(self, accept: bool = True) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.accept = accept
        self.closed = False
        self._lock = threading.Lock()

    def emit_bytes(self, request_id: str, payload: bytes) -> bool:
        with self._lock:
            if self.accept:
                self.items.append((request_id, payload))
            return self.accept

    def stats(self) -> EmitterStats:
        return EmitterStats(sent=len(self.items), failed=0, dropped=0, queued=0)

    def close(self, timeout: float | None = None) -> EmitterStats:
        self.closed = True
        return self.stats()


class FakeNode:
    def __init__(self, snapshot_version: int = 2, emitter: MemorySink | None = None) -> None:
        policy = SegmentPolicy(thresholds={"normal": 0.85}, min_tokens=32, token_budget=512)
        body = PolicyBody(segments={"global": policy}, exploration_share=0.1)
        snap = compile_snapshot(
            body, policy_name="default", version=snapshot_version, source="broker"
        )
        self.controller = Controller(snap)
        self.emitter = emitter if emitter is not None else MemorySink()
        self.started = self.closed = False

    def start(self) -> object:
        self.started = True
        return None

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


FAST_LABELS = LabelConfig(
    delay_s=0.0, delay_mean_s=0.05, reorder=0.0, loss=0.0, duplicate=0.1, duplicate_delay_s=0.2
)


def _run(config: RunConfig, nodes: list[FakeNode]):
    labels, feedback = MemorySink(), MemorySink()
    runner = FleetRunner(config, lambda i: nodes[i], labels, feedback)
    return runner, labels, feedback


def test_a_short_run_sends_every_event_label_and_feedback() -> None:
    nodes = [FakeNode() for _ in range(3)]
    config = RunConfig(
        nodes=3, rate=400.0, duration_s=0.5, seed=3, run_id="t1", labels=FAST_LABELS,
        feedback=FeedbackConfig(rate=0.5, delay_mean_s=0.05), linger_s=5.0,
    )  # fmt: skip
    runner, labels, feedback = _run(config, nodes)
    progress = []
    summary = runner.run(on_progress=progress.append, every_s=0.1)
    events = [InferenceEvent.from_bytes(p) for n in nodes for _, p in n.emitter.items]
    assert summary.requests == len(events) == 200
    assert len({e.request_id for e in events}) == 200
    assert {e.node_id for e in events} == {f"t1-node-{i}" for i in range(3)}
    assert all(e.policy_version == 2 for e in events)
    assert summary.exploration == sum(e.exploration for e in events) > 0
    assert summary.early_stops > 0 and 0 < summary.token_saving < 1
    label_msgs = [EMLabel.from_bytes(p) for _, p in labels.items]
    assert {m.request_id for m in label_msgs} == {e.request_id for e in events}
    assert summary.labels_queued == len(label_msgs) > 200  # duplicates too
    assert summary.feedback_queued == len(feedback.items) > 50
    assert all(UserFeedback.from_bytes(p) for _, p in feedback.items)
    assert summary.pending == summary.dropped == summary.failed == 0
    assert summary.delivered == len(events) + len(label_msgs) + len(feedback.items)
    assert not summary.interrupted and progress
    assert all(n.started and n.closed for n in nodes) and labels.closed and feedback.closed


def test_the_same_seed_gives_the_same_events() -> None:
    def events() -> Counter[bytes]:
        nodes = [FakeNode() for _ in range(2)]
        config = RunConfig(nodes=2, rate=300.0, duration_s=0.2, seed=9, run_id="same", linger_s=0)
        _run(config, nodes)[0].run()
        payloads = [InferenceEvent.from_bytes(p) for n in nodes for _, p in n.emitter.items]
        # Wall-clock timestamps differ between runs; everything else is the seed's.
        return Counter(
            e.model_copy(update={"ts": None}).model_dump_json().encode() for e in payloads
        )

    assert events() == events()


def test_stop_ends_the_run_early_and_cleanly() -> None:
    nodes = [FakeNode() for _ in range(2)]
    config = RunConfig(nodes=2, rate=50.0, duration_s=30.0, labels=FAST_LABELS, linger_s=30.0)
    runner, labels, _ = _run(config, nodes)
    threading.Timer(0.3, runner.stop).start()
    summary = runner.run(every_s=0.05)
    assert summary.interrupted
    assert summary.elapsed_s < 5.0
    assert 0 < summary.requests < 100
    assert all(n.closed for n in nodes) and labels.closed


def test_dropped_messages_are_counted() -> None:
    nodes = [FakeNode(emitter=MemorySink(accept=False))]
    config = RunConfig(nodes=1, rate=200.0, duration_s=0.1, linger_s=0)
    summary = _run(config, nodes)[0].run()
    assert summary.requests == 20
    assert summary.events_queued == 0 and summary.dropped == 20


def test_a_failing_node_stops_the_run_with_a_clear_error() -> None:
    node = FakeNode()

    def broken(*_args: object, **_kw: object) -> object:
        msg = "controller exploded"
        raise RuntimeError(msg)

    node.controller.begin = broken  # type: ignore[method-assign]
    config = RunConfig(nodes=1, rate=100.0, duration_s=5.0, linger_s=0)
    with pytest.raises(SimError, match="sim-node-0: RuntimeError: controller exploded"):
        _run(config, [node])[0].run()
    assert node.closed


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        FleetRunner(RunConfig(nodes=0), lambda i: FakeNode(), *_sinks())
    node = FakeNode()
    node.emitter = None  # type: ignore[assignment]
    runner = FleetRunner(RunConfig(nodes=1, duration_s=0.1), lambda i: node, *_sinks())
    with pytest.raises(SimError, match="sim-node-0: SimError: node 0 has no emitter"):
        runner.run()


def test_a_node_that_cannot_start_fails_the_run_and_the_others_are_closed() -> None:
    good, bad = FakeNode(), FakeNode()

    def refuse() -> object:
        msg = "no broker"
        raise OSError(msg)

    bad.start = refuse  # type: ignore[method-assign]
    labels, feedback = _sinks()
    runner = FleetRunner(RunConfig(nodes=2), lambda i: [good, bad][i], labels, feedback)
    with pytest.raises(SimError, match="sim-node-1: OSError: no broker"):
        runner.run()
    assert good.closed and bad.closed and labels.closed and feedback.closed


def _sinks() -> tuple[MemorySink, MemorySink]:
    return MemorySink(), MemorySink()
