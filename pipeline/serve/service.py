"""The serving node without HTTP: slots, the node SDK, one request from plan to event.

:class:`NodeServer` loads the engines (one per slot), owns the
:class:`~pipeline.node.Node` (controller, control subscriber, emitter) and
runs one request in a worker thread (:meth:`NodeServer.run`):

1. wait for a slot (the request was admitted by :meth:`NodeServer.admit`);
2. ``plan = controller.begin(request_id, segment)``: the rule, version, arm
   and load mode are fixed here, so a policy applied by the subscriber while
   the request runs serves only the requests that begin after it;
3. generate under the plan;
4. emit one :class:`~schemas.InferenceEvent` and count the metrics.

A request whose client went away (streaming) ends with
:class:`~pipeline.serve.errors.GenerationCancelled`: its slot is freed and no
event is sent (its answer was never delivered, so nothing can label it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.node import Controller, Node
from pipeline.node.errors import EmitterClosedError
from pipeline.serve.config import ServerSettings
from pipeline.serve.engine import Generation, LlamaEngine, Sampling, TextSink
from pipeline.serve.errors import GenerationCancelled, PromptTooLongError
from pipeline.serve.events import build_event
from pipeline.serve.metrics import ServeMetrics
from pipeline.serve.model import model_name
from pipeline.serve.pool import Lease, SlotPool
from schemas import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    """One admitted request, ready to run."""

    request_id: str
    """The event's request id (the client's ``metadata.request_id``, else the response id)."""
    prompt: Sequence[int]
    segment: Segment
    sampling: Sampling
    arrived: float
    """``time.perf_counter()`` at admission: latency includes the wait for a slot."""
    on_text: TextSink | None = None
    cancelled: Callable[[], bool] | None = None


class NodeServer:
    """Engines, slots and the node SDK of one serving process.

    Args:
        settings: The process's settings (``serve`` section, Kafka, node).
        engines: Prebuilt engines (one per slot); loaded from the settings when None.

    Raises:
        ModelLoadError: the model file is missing or not a loadable GGUF.
    """

    def __init__(self, settings: ServerSettings, engines: Sequence[LlamaEngine] | None = None):
        serve = settings.serve
        self.settings = settings
        path = serve.model_path()
        if engines is None:
            engines = [
                LlamaEngine(
                    path,
                    n_ctx=serve.n_ctx,
                    check_every=serve.check_every,
                    probe_tokens=serve.probe_tokens,
                    n_threads=serve.threads(),
                )
                for _ in range(serve.slots)
            ]
        self.model = model_name(path)
        self._engines = list(engines)
        self.node = Node(settings.kafka, settings.node)
        self.metrics = ServeMetrics()
        self.pool: SlotPool[LlamaEngine] = SlotPool(
            self._engines, max_queue=serve.max_queue, on_load=self._observe_load
        )
        self.metrics.set("serve_slots", self.pool.slots)
        self._observe_load(0.0)

    @property
    def controller(self) -> Controller:
        """The node's controller."""
        return self.node.controller

    def start(self) -> None:
        """Load the policy (topic, else disk, else default) and follow the control topic."""
        status = self.node.start()
        log.info("serving policy %s v%d (%s)", status.policy_name, status.version, status.source)
        self.refresh_gauges()

    def close(self, timeout: float = 10.0) -> None:
        """Stop following the control topic and flush the emitter."""
        self.node.close(timeout)

    # -- before a slot -----------------------------------------------------------------

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a chat, by the model's chat template.

        Raises:
            PromptTooLongError: the prompt leaves no room to generate.
        """
        engine = self._engines[0]  # tokenizing reads the vocabulary only: any engine will do
        return self.check_prompt(engine.tokenize(engine.chat_prompt(messages)))

    def text_prompt(self, text: str) -> list[int]:
        """Token ids of a plain prompt.

        Raises:
            PromptTooLongError: the prompt leaves no room to generate.
        """
        return self.check_prompt(self._engines[0].tokenize(text))

    def check_prompt(self, ids: list[int]) -> list[int]:
        """``ids``, if they leave room for a token and a probe in the context.

        Raises:
            PromptTooLongError: they do not.
        """
        engine = self._engines[0]
        room = engine.n_ctx - len(ids) - engine.probe.cost_per_probe
        if room < 1:
            msg = (
                f"the prompt has {len(ids)} tokens; this node's context window is "
                f"{engine.n_ctx} (with {engine.probe.cost_per_probe} kept for a probe)"
            )
            self.metrics.inc("serve_requests_failed_total", reason="bad_request")
            raise PromptTooLongError(msg)
        return ids

    def admit(self) -> Lease[LlamaEngine]:
        """A place in a slot or the queue.

        Raises:
            QueueFullError: every slot is busy and the queue is full.
        """
        try:
            return self.pool.admit()
        except Exception:
            self.metrics.inc("serve_requests_failed_total", reason="queue_full")
            raise

    # -- in a worker thread ------------------------------------------------------------

    def run(self, lease: Lease[LlamaEngine], job: Job) -> Generation:
        """Run ``job`` on the slot ``lease`` gets; emit its event; free the slot.

        Raises:
            GenerationCancelled: the client went away (no event).
        """
        with lease:
            engine = lease.take()
            assert engine is not None  # noqa: S101 - no timeout: take waits for a slot
            self._set_occupancy()
            if job.cancelled is not None and job.cancelled():
                self.metrics.inc("serve_requests_failed_total", reason="cancelled")
                raise GenerationCancelled
            plan = self.controller.begin(job.request_id, job.segment)
            try:
                generation = engine.generate(
                    job.prompt,
                    plan,
                    self.controller,
                    job.sampling,
                    on_text=job.on_text,
                    cancelled=job.cancelled,
                )
            except GenerationCancelled:
                self.metrics.inc("serve_requests_failed_total", reason="cancelled")
                raise
            except Exception:
                self.metrics.inc("serve_requests_failed_total", reason="error")
                raise
            event = build_event(
                request_id=job.request_id,
                node_id=self.settings.node.node_id,
                model=self.model,
                segment=job.segment,
                plan=plan,
                generation=generation,
                latency_ms=(time.perf_counter() - job.arrived) * 1000.0,
                node_load=lease.load,
            )
        self._emit(event)
        self._count(generation, exploration=plan.exploration)
        return generation

    def _emit(self, event: Any) -> None:
        emitter = self.node.emitter
        if emitter is None:
            return
        try:
            if not emitter.emit(event):
                self.metrics.inc("serve_events_dropped_total")
        except EmitterClosedError:
            log.warning("event of %s not sent: the node is shutting down", event.request_id)
            self.metrics.inc("serve_events_dropped_total")

    def _count(self, generation: Generation, *, exploration: bool) -> None:
        metrics = self.metrics
        metrics.inc(
            "serve_requests_total",
            stop_reason=generation.stop_reason,
            exploration=str(exploration).lower(),
        )
        metrics.inc("serve_tokens_total", generation.tokens_prompt, kind="prompt")
        metrics.inc("serve_tokens_total", generation.tokens_generated, kind="generated")
        metrics.inc("serve_tokens_total", generation.tokens_probe, kind="probe")

    # -- load and gauges ---------------------------------------------------------------

    def _observe_load(self, load: float) -> None:
        mode = self.node.controller.observe_load(load)
        self.metrics.set("serve_load", load)
        self.metrics.set_load_mode(mode)
        self._set_occupancy()

    def _set_occupancy(self) -> None:
        self.metrics.set("serve_slots_busy", self.pool.busy)
        self.metrics.set("serve_queue_length", self.pool.queued)

    def refresh_gauges(self) -> None:
        """Set the gauges read from the controller (policy version, load mode)."""
        snapshot = self.controller.snapshot
        self.metrics.set("serve_policy_version", snapshot.version, policy=snapshot.policy_name)
        self.metrics.set_load_mode(self.controller.load_mode)
        self._set_occupancy()

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` reports."""
        status = self.node.subscriber.status()
        snapshot = self.controller.snapshot
        emitter = self.node.emitter
        stats = emitter.stats() if emitter is not None else None
        return {
            "status": "ok",
            "model": self.model,
            "node_id": self.settings.node.node_id,
            "policy": {
                "name": snapshot.policy_name,
                "version": snapshot.version,
                "source": snapshot.source,
                "candidate_version": snapshot.candidate_version,
            },
            "load": {"mode": self.controller.load_mode, "value": self.pool.load()},
            "slots": {"total": self.pool.slots, "busy": self.pool.busy},
            "queue": {"length": self.pool.queued, "max": self.settings.serve.max_queue},
            "subscriber": {
                "bootstrapped": status.bootstrapped,
                "source": status.source,
                "version": status.version,
                "applied_at": status.applied_at.isoformat() if status.applied_at else None,
                "applied": status.applied,
                "refused": status.refused,
                "last_refusal": status.last_refusal,
                "last_error": status.last_error,
            },
            "events": None
            if stats is None
            else {"sent": stats.sent, "failed": stats.failed, "dropped": stats.dropped},
        }
