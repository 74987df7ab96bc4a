"""Serving simulated requests through the node SDK's controller (no I/O).

A simulated node does what a real one does: it asks the controller for the
request's plan (exploration, canary or production, from the live policy),
generates, asks ``should_stop`` at each checkpoint, and reports an
``InferenceEvent``. Only the generation is simulated. The Kafka runner and
the offline :func:`simulate` share :func:`serve`, so both apply the policy
exactly like a deployed node.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.node.controller import Controller
from pipeline.sim.model import SimRequest, generate, pick_segment, request_id, request_rng
from pipeline.sim.scenario import Scenario
from schemas import InferenceEvent, StopReason


@dataclass(frozen=True, slots=True)
class SimClock:
    """Simulated time: request ``index`` finishes at ``start + index / rate`` seconds.

    Args:
        start: Time of request 0; must be timezone-aware.
        rate: Requests per second of the whole fleet.
    """

    start: datetime
    rate: float

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.rate <= 0:
            msg = "SimClock needs a timezone-aware start and a positive rate"
            raise ValueError(msg)

    def seconds(self, index: int) -> float:
        """Seconds from ``start`` to request ``index``."""
        return index / self.rate

    def at(self, index: int) -> datetime:
        """When request ``index`` finishes."""
        return self.start + timedelta(seconds=index / self.rate)


def load_at(scen: Scenario, seconds: float, node: int = 0) -> float:
    """A node's load: a compressed daily cycle (0.1 to 0.9), nodes slightly out of phase."""
    phase = 2.0 * math.pi * seconds / scen.load_period_s + 0.3 * node
    return round(0.5 + 0.4 * math.sin(phase), 4)


@dataclass(frozen=True, slots=True)
class Served:
    """One request as served: the request, where it stopped, and the event reported.

    Attributes:
        request: The simulated request (full trajectory, gold answer).
        stop: Checkpoint index where generation stopped.
        event: The event the node reports.
    """

    request: SimRequest
    stop: int
    event: InferenceEvent

    @property
    def correct(self) -> bool:
        """Whether the served answer is right."""
        return self.request.latent.correct[self.stop]


def serve(
    controller: Controller,
    scen: Scenario,
    seed: int,
    index: int,
    *,
    node_id: str,
    finished_at: datetime,
    load: float,
    run_id: str = "sim",
) -> Served:
    """Serve request ``index`` under the controller's live policy.

    The policy's token budget cuts the generation, so the request is drawn
    after the plan is known; its segment comes first from the same stream.
    """
    controller.observe_load(load)
    key = pick_segment(scen, request_rng(seed, index, "request")).key
    rid = request_id(run_id, index)
    plan = controller.begin(rid, key)
    req = generate(scen, seed, index, budget=plan.token_budget, run_id=run_id)
    lat = req.latent
    last = len(lat.tokens) - 1
    stop, reason = last, "natural_end" if lat.natural_end else "budget"
    for i, (tokens, conf) in enumerate(zip(lat.tokens, lat.confidence, strict=True)):
        decision = controller.should_stop(plan, tokens, conf)
        if decision.stop:
            stop = i
            if i < last or not lat.natural_end:
                # Past the end an EOS ends generation whatever the controller says.
                reason = decision.reason
            break
    tokens = lat.tokens[stop]
    event = InferenceEvent(
        event_id=f"ev-{rid}",
        request_id=rid,
        node_id=node_id,
        ts=finished_at,
        model=req.model,
        segment=req.segment,
        policy_name=plan.policy_name,
        policy_version=plan.policy_version,
        threshold=None if plan.exploration else plan.threshold_at(tokens),
        arm=plan.arm,
        exploration=plan.exploration,
        tokens_prompt=req.tokens_prompt,
        tokens_generated=tokens,
        tokens_budget=plan.token_budget,
        stop_reason=_stop_reason(reason),
        confidence=lat.confidence[stop],
        answer=req.answers[stop],
        latency_ms=round(tokens * scen.ms_per_token * (1.0 + load) + 0.05 * req.tokens_prompt, 3),
        node_load=load,
        trajectory=req.trajectory() if plan.exploration else None,
    )
    return Served(request=req, stop=stop, event=event)


_STOP_REASONS: dict[str, StopReason] = {
    "confident": "confident",
    "budget": "budget",
    "natural_end": "natural_end",
}


def _stop_reason(reason: str) -> StopReason:
    try:
        return _STOP_REASONS[reason]
    except KeyError:
        msg = f"the controller stopped for an unexpected reason: {reason!r}"
        raise ValueError(msg) from None


def simulate(
    scen: Scenario,
    seed: int,
    controllers: Sequence[Controller],
    n: int,
    clock: SimClock,
    *,
    start_index: int = 0,
    run_id: str = "sim",
) -> Iterator[Served]:
    """Serve requests ``start_index .. start_index + n - 1`` offline, round-robin over nodes.

    Args:
        scen: The scenario.
        seed: Random seed.
        controllers: One controller per simulated node (they keep their own load mode).
        n: Number of requests.
        clock: Simulated time of each request.
        start_index: First request index.
        run_id: Prefix of request ids.
    """
    for index in range(start_index, start_index + n):
        node = index % len(controllers)
        seconds = clock.seconds(index)
        yield serve(
            controllers[node],
            scen,
            seed,
            index,
            node_id=f"sim-node-{node}",
            finished_at=clock.at(index),
            load=load_at(scen, seconds, node),
            run_id=run_id,
        )
