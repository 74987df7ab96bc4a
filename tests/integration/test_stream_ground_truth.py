"""Done-when: simulated traffic through a real worker lands in ClickHouse as the simulator says.

The simulator's runner drives real node SDK nodes (events) and producers of
labels and feedback, with label loss, delay, duplicates and reordering. The
worker joins and sinks them. For every request the outcome row in ClickHouse
(``FINAL``: after deduplication) must match the simulator's ground truth:
EM of the served answer (the simulator knows whether it was right; labels
write gold answers as aliases or give verdicts, so EM must normalise),
tokens used, labeled or not (a lost label leaves it unlabeled once its join
window expires), and the feedback it got.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.node import Emitter, EmitterSettings, EmitterStats, Node, NodeSettings
from pipeline.sim.fleet import Served
from pipeline.sim.ports import EventSink
from pipeline.sim.runner import FleetRunner, RunConfig
from pipeline.sim.signals import FeedbackConfig, LabelConfig
from pipeline.stream.config import StreamSettings
from pipeline.warehouse.client import connect
from schemas import EMLabel, UserFeedback
from tests.integration._stream import start_worker
from tests.integration.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Labels and feedback arrive within a few seconds (exponential tails included),
# well inside the join window, so every label that is sent is joined.
LABELS = LabelConfig(
    delay_s=0.2, delay_mean_s=0.3, loss=0.15, duplicate=0.2, duplicate_delay_s=1.0,
    reorder=0.2, reorder_window_s=1.5, alias=0.3, verdict=0.1,
)  # fmt: skip
FEEDBACK = FeedbackConfig(rate=0.3, delay_mean_s=0.4)
STREAM = StreamSettings(
    join_window_s=8.0,
    sweep_interval_s=0.5,
    commit_interval_s=0.5,
    sink_batch_max_s=0.3,
    shutdown_timeout_s=20.0,
)


class Recording:
    """A producer that remembers what it accepted."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self._lock = threading.Lock()

    def emit_bytes(self, request_id: str, payload: bytes) -> bool:
        accepted = self.inner.emit_bytes(request_id, payload)
        if accepted:
            with self._lock:
                self.sent.append(payload)
        return accepted

    def stats(self) -> EmitterStats:
        return self.inner.stats()

    def close(self, timeout: float | None = None) -> EmitterStats:
        return self.inner.close(timeout)


class TruthRunner(FleetRunner):
    """The runner, keeping every served request (the simulator's own record of it)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.served: dict[str, Served] = {}

    def _record(self, served: Served, queued: bool) -> None:
        super()._record(served, queued)
        assert queued, "the node's emitter dropped an event"
        self.served[served.event.request_id] = served


@dataclass(frozen=True)
class Row:
    labeled: bool
    em: bool | None
    tokens_generated: int
    feedback_count: int
    negative_feedback: int


def truth(runner: TruthRunner, labels: Recording, feedback: Recording) -> dict[str, Row]:
    labeled = {EMLabel.from_bytes(raw).request_id for raw in labels.sent}
    ratings: dict[str, set[tuple[str, int]]] = {}
    for raw in feedback.sent:
        fb = UserFeedback.from_bytes(raw)
        ratings.setdefault(fb.request_id, set()).add((fb.feedback_id, fb.rating))
    out = {}
    for rid, served in runner.served.items():
        given = ratings.get(rid, set())
        out[rid] = Row(
            labeled=rid in labeled,
            em=served.correct if rid in labeled else None,
            tokens_generated=served.event.tokens_generated,
            feedback_count=len(given),
            negative_feedback=sum(1 for _, rating in given if rating < 0),
        )
    return out


def stored(settings: Settings, run_id: str) -> dict[str, Row]:
    client = connect(settings)
    try:
        result = client.query(
            "SELECT request_id, labeled, em, tokens_generated, feedback_count, negative_feedback "
            "FROM outcomes FINAL WHERE startsWith(request_id, %(p)s)",
            parameters={"p": f"{run_id}-"},
        ).result_rows
    finally:
        client.close()
    return {str(r[0]): Row(bool(r[1]), r[2], int(r[3]), int(r[4]), int(r[5])) for r in result}


def test_simulated_traffic_lands_in_clickhouse_as_the_simulator_says(isolated: Settings) -> None:
    run_id = f"gt{uuid.uuid4().hex[:6]}"
    worker = start_worker(isolated, STREAM)
    try:
        template = NodeSettings(
            state_dir=isolated.state_dir / "gt" / run_id,
            emitter=EmitterSettings(compression="none"),  # aiokafka here has no lz4
        )

        def make_node(i: int) -> Node:
            node_id = f"{run_id}-node-{i}"
            update = {"node_id": node_id, "state_dir": template.state_dir / node_id}
            return Node(isolated.kafka, template.model_copy(update=update))

        labels = Recording(
            Emitter(isolated.kafka, EmitterSettings(topic="em-labels", compression="none"))
        )
        feedback = Recording(
            Emitter(isolated.kafka, EmitterSettings(topic="user-feedback", compression="none"))
        )
        config = RunConfig(
            nodes=2, rate=40.0, duration_s=5.0, seed=11, run_id=run_id,
            labels=LABELS, feedback=FEEDBACK, linger_s=8.0,
        )  # fmt: skip
        runner = TruthRunner(config, make_node, labels, feedback)
        summary = runner.run()
        # Exact ground truth needs every message sent and none left undelivered.
        assert summary.requests >= 150
        assert (summary.dropped, summary.pending, summary.failed) == (0, 0, 0), summary
        want = truth(runner, labels, feedback)
        assert len(want) == summary.requests
        # The traffic has what the test is about.
        assert 0 < sum(r.labeled for r in want.values()) < len(want)
        assert any(r.em for r in want.values()) and any(r.em is False for r in want.values())
        assert sum(r.feedback_count for r in want.values()) > 10
        assert any(r.negative_feedback for r in want.values())
        assert len(labels.sent) > sum(r.labeled for r in want.values())  # duplicates sent

        # Unlabeled requests come out when their window expires (8 s after the event).
        got = eventually(
            lambda: (s := stored(isolated, run_id)) == want and s,
            60,
            "ClickHouse to hold the ground truth",
        )
    except BaseException:
        if "want" in locals():
            have = stored(isolated, run_id)
            wrong = {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v}
            print(f"{len(wrong)} of {len(want)} requests differ, e.g. {list(wrong.items())[:5]}")
        raise
    finally:
        worker.halt()
    assert worker.errors == []
    assert len(got) == len(want)
    # Nothing of this run was dead-lettered: the node SDK, the labels and the
    # feedback all follow the contracts.
    assert worker.worker.metrics.total("stream_dead_letters_total") == 0
