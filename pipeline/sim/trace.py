"""A trace-driven fleet: captured real trajectories replayed through the node SDK.

Instead of the simulated model (:mod:`pipeline.sim.model`), each request
draws one record of a trajectory file (``pipeline capture``'s output,
:class:`~schemas.TrajectoryRecord`) by a seeded resampling, gets a fresh
request id, and is served exactly as a node would serve that generation:

- the plan comes from the node's controller (exploration, canary or
  production, under the live policy), for the record's segment;
- exploration runs to the end and carries the record's checkpoints;
- otherwise, at each checkpoint before the end (and within the budget) that
  the engine would probe (from the plan's ``min_tokens`` on),
  ``controller.should_stop`` decides: the first confident checkpoint is the
  stop, its trial answer the answer; else the generation ends at
  ``tokens_full`` (``natural_end``, the answer ``final_answer``) or is cut at
  the budget (the answer of the last checkpoint before the cut);
- probe cost: ``probe_tokens`` per checkpoint evaluated, when the rule can
  stop early or for exploration (the rule of :mod:`pipeline.serve.engine`); a
  checkpoint at ``tokens_full`` is the end's own extraction, never a probe;
- labels carry the record's gold answers, with the simulator's delivery
  faults (:mod:`pipeline.sim.signals`); feedback follows the served answer's EM.

Pure and seeded; the runner (:class:`~pipeline.sim.runner.RunConfig` ``trace``)
does the I/O. :func:`trace_latent` turns a record into the oracle's
:class:`~pipeline.sim.model.Latent`, for yardsticks on the trace itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from pipeline.errors import TrajectoryFileError
from pipeline.node.controller import Controller
from pipeline.node.decision import RequestPlan
from pipeline.sim.model import Latent, request_id, request_rng
from pipeline.sim.signals import (
    FeedbackConfig,
    LabelConfig,
    Scheduled,
    schedule_feedback,
    schedule_label,
)
from pipeline.stream.em import checkpoint_em, exact_match
from schemas import Checkpoint, EMLabel, InferenceEvent, Segment, StopReason, UserFeedback
from schemas.trajectory import TrajectoryRecord

DEFAULT_MS_PER_TOKEN = 12.0
"""Latency per token (at no load) of a record without ``secs``; with it, the captured
run's wall time scales by the share of its tokens (probes included) a replay spends."""


@dataclass(frozen=True, slots=True, eq=False)
class TraceRequest:
    """One record, prepared for replay (its EM per checkpoint computed once)."""

    record: TrajectoryRecord
    segment: Segment
    key: str
    """``tenant/task/length_bucket``, short keys mapped."""
    tokens: tuple[int, ...]
    confidence: tuple[float, ...]
    answers: tuple[str, ...]
    correct: tuple[bool, ...]
    """EM of each checkpoint's trial answer against the record's gold answers."""
    full_correct: bool
    """EM of ``final_answer``."""

    @classmethod
    def of(cls, record: TrajectoryRecord) -> TraceRequest:
        """Prepare ``record``."""
        points = record.checkpoints
        answers = tuple(p.answer for p in points)
        segment = record.segment_value()
        return cls(
            record=record,
            segment=segment,
            key=segment.key(),
            tokens=tuple(p.tokens for p in points),
            confidence=tuple(p.confidence for p in points),
            answers=answers,
            correct=checkpoint_em(answers, record.gold),
            full_correct=exact_match(record.final_answer, record.gold),
        )


@dataclass(frozen=True, slots=True, eq=False)
class TraceSet:
    """The records a trace-driven fleet resamples from."""

    requests: tuple[TraceRequest, ...]
    source: str = "trace"

    def __post_init__(self) -> None:
        if not self.requests:
            msg = f"{self.source} holds no trajectory record"
            raise TrajectoryFileError(msg)

    @classmethod
    def of(cls, records: Sequence[TrajectoryRecord], source: str = "trace") -> TraceSet:
        """A set of ``records``, in their order."""
        return cls(tuple(TraceRequest.of(r) for r in records), source)

    def __len__(self) -> int:
        return len(self.requests)

    def pick(self, seed: int, index: int) -> TraceRequest:
        """The record request ``index`` replays: uniform, with replacement, fixed by ``seed``."""
        return self.requests[request_rng(seed, index, "trace").randrange(len(self.requests))]


def read_trace(path: Path) -> TraceSet:
    """The records of a trajectory file (blank lines skipped).

    Raises:
        TrajectoryFileError: unreadable, empty, or a line that is not a trajectory record.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read trajectory file {path}: {exc}"
        raise TrajectoryFileError(msg) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(TrajectoryRecord.from_line(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            msg = f"{path} line {number}: not a trajectory record ({where}: {first['msg']})"
            raise TrajectoryFileError(msg) from None
    return TraceSet.of(records, str(path))


@dataclass(frozen=True, slots=True)
class Replay:
    """Where a replayed generation stopped, and what it reports."""

    tokens: int
    answer: str
    confidence: float
    reason: StopReason
    stop: int | None
    """Index of the checkpoint of a confident stop; None when it ran to the end or the budget."""
    probes: int
    """Checkpoints evaluated (each cost a probe)."""
    tokens_probe: int
    correct: bool
    tokens_full: int
    """The full generation's tokens under this budget (``tokens_full`` cut at the budget)."""

    @property
    def early(self) -> bool:
        """True when the stop saved tokens."""
        return self.tokens < self.tokens_full


def replay(trace: TraceRequest, plan: RequestPlan, controller: Controller) -> Replay:
    """Serve ``trace`` under ``plan``; see the module doc."""
    record = trace.record
    budget = plan.token_budget
    full = record.tokens_full
    end = min(full, budget)
    probing = plan.probes
    tokens, confidence = trace.tokens, trace.confidence
    probes = 0
    last = -1  # the last checkpoint within the generation
    for i, at in enumerate(tokens):
        if at > end:
            break
        last = i
        if at >= full or not probing or at < plan.min_tokens:
            continue
        probes += 1
        if controller.should_stop(plan, at, confidence[i]).reason == "confident":
            return Replay(
                tokens=at,
                answer=trace.answers[i],
                confidence=confidence[i],
                reason="confident",
                stop=i,
                probes=probes,
                tokens_probe=probes * record.probe_tokens,
                correct=trace.correct[i],
                tokens_full=end,
            )
    at_end = last if last >= 0 else 0  # before the first checkpoint: its answer is the nearest
    reason: StopReason
    if full <= budget:
        answer, right, reason = record.final_answer, trace.full_correct, "natural_end"
    else:
        answer, right, reason = trace.answers[at_end], trace.correct[at_end], "budget"
    return Replay(
        tokens=end,
        answer=answer,
        confidence=confidence[at_end],
        reason=reason,
        stop=None,
        probes=probes,
        tokens_probe=probes * record.probe_tokens,
        correct=right,
        tokens_full=end,
    )


def trajectory(trace: TraceRequest, end: int) -> tuple[Checkpoint, ...]:
    """The record's checkpoints up to ``end`` tokens (at least one: the first, moved to the end)."""
    points = tuple(p for p in trace.record.checkpoints if p.tokens <= end)
    if points:
        return points
    first = trace.record.checkpoints[0]
    return (Checkpoint(tokens=end, confidence=first.confidence, answer=first.answer),)


@dataclass(frozen=True, slots=True)
class TraceServed:
    """One replayed request: its index, the record, the replay and the event."""

    index: int
    trace: TraceRequest
    replay: Replay
    event: InferenceEvent

    @property
    def correct(self) -> bool:
        """Whether the served answer is right (EM against the record's gold answers)."""
        return self.replay.correct


def serve_trace(
    controller: Controller,
    traces: TraceSet,
    seed: int,
    index: int,
    *,
    node_id: str,
    finished_at: datetime,
    load: float,
    run_id: str = "sim",
) -> TraceServed:
    """Serve request ``index`` from a resampled record under the controller's live policy."""
    controller.observe_load(load)
    trace = traces.pick(seed, index)
    record = trace.record
    rid = request_id(run_id, index)
    plan = controller.begin(rid, trace.key)
    done = replay(trace, plan, controller)
    spent = done.tokens + done.tokens_probe
    if record.secs:
        # The captured run's wall time, scaled by the share of its work this replay did.
        probed = sum(1 for at in trace.tokens if at < record.tokens_full)
        latency = record.secs * 1000.0 * spent / (record.tokens_full + probed * record.probe_tokens)
    else:
        latency = spent * DEFAULT_MS_PER_TOKEN * (1.0 + load)
    event = InferenceEvent(
        event_id=f"ev-{rid}",
        request_id=rid,
        node_id=node_id,
        ts=finished_at,
        model=record.model or "trace",
        segment=trace.segment,
        policy_name=plan.policy_name,
        policy_version=plan.policy_version,
        threshold=None if plan.exploration else plan.threshold_at(done.tokens),
        arm=plan.arm,
        exploration=plan.exploration,
        tokens_prompt=record.tokens_prompt or 0,
        tokens_generated=done.tokens,
        tokens_probe=done.tokens_probe,
        tokens_budget=plan.token_budget,
        stop_reason=done.reason,
        confidence=done.confidence,
        answer=done.answer,
        latency_ms=round(latency, 3),
        node_load=load,
        trajectory=trajectory(trace, done.tokens) if plan.exploration else None,
    )
    return TraceServed(index=index, trace=trace, replay=done, event=event)


def _alias(gold: str, rng: random.Random) -> str:
    """The gold answer written another way that SQuAD normalisation maps back to it."""
    forms = (f"The {gold}", gold.upper(), f"{gold}.", gold.lower())
    return forms[rng.randrange(len(forms))]


def trace_labels(served: TraceServed, config: LabelConfig, seed: int) -> list[Scheduled[EMLabel]]:
    """The label deliveries of one replayed request, with the record's gold answers."""
    gold = served.trace.record.gold
    return schedule_label(
        request_rng(seed, served.index, "label"),
        config,
        index=served.index,
        request_id=served.event.request_id,
        finished_at=served.event.ts,
        gold=gold,
        alias_of=lambda rng: _alias(gold[0], rng),
        correct=served.correct,
    )


def trace_feedback(
    served: TraceServed, config: FeedbackConfig, seed: int
) -> list[Scheduled[UserFeedback]]:
    """The user's feedback on one replayed request, if any."""
    return schedule_feedback(
        request_rng(seed, served.index, "feedback"),
        config,
        index=served.index,
        request_id=served.event.request_id,
        finished_at=served.event.ts,
        correct=served.correct,
        gold=served.trace.record.gold[0],
    )


def trace_latent(trace: TraceRequest, budget: int | None = None) -> Latent:
    """The record as the oracle's latent trajectory: checkpoints before the end, then the end.

    The end point is ``tokens_full`` with ``final_answer``'s EM (a stop there is
    the natural end), or the budget's cut with the last checkpoint's answer.
    """
    full = trace.record.tokens_full
    end = full if budget is None else min(full, budget)
    inside = [i for i, at in enumerate(trace.tokens) if at < end]
    last = inside[-1] if inside else 0
    if end == full:
        end_right = trace.full_correct
    else:
        cut = [i for i, at in enumerate(trace.tokens) if at <= end]
        end_right = trace.correct[cut[-1] if cut else 0]
    return Latent(
        tokens=(*(trace.tokens[i] for i in inside), end),
        confidence=(*(trace.confidence[i] for i in inside), trace.confidence[last]),
        correct=(*(trace.correct[i] for i in inside), end_right),
        natural_end=end == full,
        found_at=math.inf,
    )
