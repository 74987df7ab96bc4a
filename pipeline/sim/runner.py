"""Run the simulated fleet for real: nodes, labelers and users talking to Kafka.

Thin on purpose: the requests, the stop decisions and the messages come from
the pure modules and the node SDK's controller; this module only paces them
in wall-clock time and hands them to producers. One thread per node serves
requests ``node, node + N, node + 2N, ...`` at the fleet's target rate;
one delivery thread sends labels and feedback when their simulated delivery
time comes. A stop (SIGTERM, Ctrl-C, or the end of the duration) ends
traffic, lets the pending labels come due for ``linger_s`` (not after an
interrupt), then flushes every producer. With ``RunConfig.trace`` the
requests replay captured real trajectories (:mod:`pipeline.sim.trace`)
instead of the simulated model.

Failure policy: an exception in a node or the delivery thread stops the run,
which then shuts down cleanly and raises :class:`SimError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial

from pipeline.sim.errors import SimError
from pipeline.sim.fleet import Served, SimClock, load_at, serve
from pipeline.sim.ports import EventSink, FleetNode
from pipeline.sim.scenario import Scenario, scenario
from pipeline.sim.signals import (
    FeedbackConfig,
    LabelConfig,
    Outbox,
    Scheduled,
    feedback_for,
    labels_for,
)
from pipeline.sim.trace import TraceServed, TraceSet, serve_trace, trace_feedback, trace_labels
from schemas import EMLabel, UserFeedback


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What to simulate, how fast and for how long."""

    nodes: int = 4
    rate: float = 50.0
    """Requests per second of the whole fleet."""
    duration_s: float = 60.0
    seed: int = 0
    run_id: str = "sim"
    scenario: Scenario = field(default_factory=scenario)
    labels: LabelConfig = LabelConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    linger_s: float = 10.0
    """After traffic ends, how long labels and feedback may still come due."""
    close_timeout_s: float = 10.0
    trace: TraceSet | None = None
    """Replay these captured trajectories instead of the scenario's model
    (:mod:`pipeline.sim.trace`); the scenario then only sets the load cycle."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Counters of a run (also its progress, while it runs)."""

    requests: int = 0
    exploration: int = 0
    early_stops: int = 0
    tokens_generated: int = 0
    tokens_full: int = 0
    events_queued: int = 0
    labels_queued: int = 0
    feedback_queued: int = 0
    dropped: int = 0
    """Messages refused by a full producer buffer (events, labels and feedback)."""
    pending: int = 0
    """Labels and feedback not yet due when the run ended (never sent)."""
    delivered: int = 0
    """Messages the broker acknowledged (known after the producers are flushed)."""
    failed: int = 0
    """Messages accepted but never delivered."""
    elapsed_s: float = 0.0
    traffic_s: float = 0.0
    """Seconds the nodes served requests (elapsed, less start-up and lingering)."""
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Requests per second achieved while serving."""
        return self.requests / self.traffic_s if self.traffic_s > 0 else 0.0

    @property
    def token_saving(self) -> float:
        """Share of the full generations' tokens not generated."""
        return 1.0 - self.tokens_generated / self.tokens_full if self.tokens_full else 0.0


_COUNTERS = (
    "requests",
    "exploration",
    "early_stops",
    "tokens_generated",
    "tokens_full",
    "events_queued",
    "labels_queued",
    "feedback_queued",
    "dropped",
)


class FleetRunner:
    """Drives ``config.nodes`` nodes, a labeler and users; see the module docstring.

    Args:
        config: The run.
        make_node: Builds node ``i`` (not started); it must have an emitter.
        labels: Producer of ``EMLabel``s.
        feedback: Producer of ``UserFeedback``.
    """

    def __init__(
        self,
        config: RunConfig,
        make_node: Callable[[int], FleetNode],
        labels: EventSink,
        feedback: EventSink,
    ) -> None:
        if config.nodes < 1 or config.rate <= 0 or config.duration_s < 0:
            msg = "a run needs at least one node, a positive rate and a duration >= 0"
            raise ValueError(msg)
        self._config = config
        self._make_node = make_node
        self._labels, self._feedback = labels, feedback
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._label_box: Outbox[EMLabel] = Outbox()
        self._feedback_box: Outbox[UserFeedback] = Outbox()
        self._stop = threading.Event()
        self._interrupted = False
        self._traffic_done = threading.Event()
        self._errors: list[str] = []
        self._t0 = time.monotonic()
        self._traffic_s = 0.0

    def stop(self) -> None:
        """End the run now (safe from a signal handler or another thread): no lingering."""
        self._interrupted = True
        self._stop.set()

    def snapshot(self, *, elapsed_s: float | None = None) -> RunSummary:
        """The counters now."""
        with self._lock:
            counts = dict(self._counts)
            pending = len(self._label_box) + len(self._feedback_box)
        elapsed = time.monotonic() - self._t0 if elapsed_s is None else elapsed_s
        return RunSummary(
            **counts, pending=pending, elapsed_s=round(elapsed, 3), interrupted=self._interrupted
        )

    def run(
        self, on_progress: Callable[[RunSummary], None] | None = None, every_s: float = 0.5
    ) -> RunSummary:
        """Run to the end of the duration or until stopped; return the summary.

        Raises:
            SimError: if a node could not be built or started, or a thread failed.
        """
        cfg = self._config
        nodes = self._start_nodes()
        self._t0 = time.monotonic()
        clock = SimClock(datetime.now(UTC), cfg.rate)
        workers = [
            self._thread(f"sim-node-{i}", partial(self._serve_loop, i, node, clock))
            for i, node in enumerate(nodes)
        ]
        courier = self._thread("sim-delivery", self._deliver_loop)
        try:
            while any(t.is_alive() for t in workers) and not self._stop.is_set():
                self._stop.wait(every_s)
                if on_progress is not None:
                    on_progress(self.snapshot())
            self._traffic_s = time.monotonic() - self._t0
            self._traffic_done.set()
            while courier.is_alive():  # lingering: late labels and feedback come due
                courier.join(every_s)
                if on_progress is not None:
                    on_progress(self.snapshot())
        except KeyboardInterrupt:
            self.stop()
        finally:
            self._stop.set()
            for thread in [*workers, courier]:
                thread.join()
            summary = self._close(nodes)
        if self._errors:
            raise SimError("; ".join(self._errors))
        return summary

    def _start_nodes(self) -> list[FleetNode]:
        # Concurrently: a node without a broker waits out its bootstrap timeout.
        with ThreadPoolExecutor(max_workers=self._config.nodes) as pool:
            futures = [pool.submit(self._start_node, i) for i in range(self._config.nodes)]
        nodes, errors = [], []
        for i, future in enumerate(futures):
            exc = future.exception()
            if exc is None:
                nodes.append(future.result())
            else:
                errors.append(f"sim-node-{i}: {type(exc).__name__}: {exc}")
        if errors:
            self._close(nodes)
            raise SimError("; ".join(errors))
        return nodes

    def _start_node(self, i: int) -> FleetNode:
        node = self._make_node(i)
        if node.emitter is None:
            msg = f"node {i} has no emitter: build it with emit=True"
            raise SimError(msg)
        try:
            node.start()
        except BaseException:
            node.close(self._config.close_timeout_s)
            raise
        return node

    def _thread(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:  # noqa: BLE001  # recorded, then raised by run()
                with self._lock:
                    self._errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self._stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def _serve_loop(self, i: int, node: FleetNode, clock: SimClock) -> None:
        cfg = self._config
        emitter = node.emitter
        index = i
        while emitter is not None and not self._stop.is_set():
            due = clock.seconds(index)
            if due >= cfg.duration_s:
                return
            wait = self._t0 + due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            node_id, at = f"{cfg.run_id}-node-{i}", clock.at(index)
            load = load_at(cfg.scenario, due, i)
            served: Served | TraceServed
            if cfg.trace is None:
                served = serve(node.controller, cfg.scenario, cfg.seed, index, node_id=node_id,
                               finished_at=at, load=load, run_id=cfg.run_id)  # fmt: skip
            else:
                served = serve_trace(node.controller, cfg.trace, cfg.seed, index, node_id=node_id,
                                     finished_at=at, load=load, run_id=cfg.run_id)  # fmt: skip
            queued = emitter.emit_bytes(served.event.request_id, served.event.to_bytes())
            self._record(served, queued)
            index += cfg.nodes

    def _record(self, served: Served | TraceServed, queued: bool) -> None:
        cfg = self._config
        if isinstance(served, Served):
            labels = labels_for(served, cfg.labels, cfg.seed)
            feedback = feedback_for(served, cfg.feedback, cfg.seed)
            lat = served.request.latent
            early, full = served.stop < len(lat.tokens) - 1, lat.tokens[-1]
        else:
            labels = trace_labels(served, cfg.labels, cfg.seed)
            feedback = trace_feedback(served, cfg.feedback, cfg.seed)
            early, full = served.replay.early, served.replay.tokens_full
        event = served.event
        with self._lock:
            self._label_box.add(labels)
            self._feedback_box.add(feedback)
            c = self._counts
            c["requests"] += 1
            c["exploration"] += event.exploration
            c["early_stops"] += early
            c["tokens_generated"] += event.tokens_generated + event.tokens_probe  # net of probes
            c["tokens_full"] += full
            c["events_queued" if queued else "dropped"] += 1

    def _deliver_loop(self) -> None:
        linger_until = 0.0
        while not self._stop.is_set():
            now = datetime.now(UTC)
            with self._lock:
                labels = self._label_box.due(now)
                feedback = self._feedback_box.due(now)
                left = len(self._label_box) + len(self._feedback_box)
            sent = _send(self._labels, labels)
            sent_fb = _send(self._feedback, feedback)
            with self._lock:
                self._counts["labels_queued"] += sent
                self._counts["feedback_queued"] += sent_fb
                self._counts["dropped"] += len(labels) - sent + len(feedback) - sent_fb
            if self._traffic_done.is_set():
                linger_until = linger_until or time.monotonic() + self._config.linger_s
                if not left or time.monotonic() >= linger_until:
                    return
            self._stop.wait(0.05)

    def _close(self, nodes: list[FleetNode]) -> RunSummary:
        elapsed = time.monotonic() - self._t0
        traffic = self._traffic_s or elapsed  # interrupted: traffic ran until now
        timeout = self._config.close_timeout_s
        stats = [self._labels.close(timeout), self._feedback.close(timeout)]
        if nodes:
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                # Each close flushes the node's emitter; in parallel, not one after another.
                list(pool.map(lambda node: node.close(timeout), nodes))
        stats += [node.emitter.stats() for node in nodes if node.emitter is not None]
        return replace(
            self.snapshot(elapsed_s=elapsed),
            traffic_s=round(traffic, 3),
            delivered=sum(s.sent for s in stats),
            failed=sum(s.failed for s in stats),
        )


def _send(
    sink: EventSink, items: Sequence[Scheduled[EMLabel]] | Sequence[Scheduled[UserFeedback]]
) -> int:
    """Queue messages on ``sink``; the number accepted."""
    return sum(sink.emit_bytes(s.message.request_id, s.message.to_bytes()) for s in items)
