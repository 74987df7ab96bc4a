"""Labels and user feedback for served requests, with realistic delivery faults.

Pure: each served request gets its own random stream, so its labels and
feedback do not depend on what else was simulated. Each message comes with
the time it should be delivered; a runner sends it then, so delays become
real lateness, and random delays (plus an occasional long one) become real
reordering. Faults, as a labeling pipeline has them:

- loss: a request never gets a label;
- duplication: the same label (same ``label_id``) delivered twice, like a
  producer retry after a lost ack;
- reordering: some labels wait much longer than the rest;
- aliases: the gold answer written differently (``"The Paris"``), so only a
  normalising exact match scores it right.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from pipeline.sim.answers import alias
from pipeline.sim.fleet import Served
from pipeline.sim.model import request_rng
from schemas import EMLabel, FeedbackKind, UserFeedback

M = TypeVar("M", EMLabel, UserFeedback)


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """How labels arrive. Rates are probabilities per request; times in seconds.

    Attributes:
        delay_s: Minimum delay after the request finished.
        delay_mean_s: Mean of the exponential extra delay (0: none).
        loss: Share of requests never labeled.
        duplicate: Share of labels delivered twice.
        duplicate_delay_s: Longest gap between a label and its duplicate.
        reorder: Share of labels held back by up to ``reorder_window_s`` more.
        reorder_window_s: Longest extra hold of a reordered label.
        alias: Share of labels whose gold answer is written as an alias.
        verdict: Share of labels that give a verdict on the served answer instead.
        labelers: Number of distinct labeler ids.
    """

    delay_s: float = 2.0
    delay_mean_s: float = 3.0
    loss: float = 0.02
    duplicate: float = 0.02
    duplicate_delay_s: float = 5.0
    reorder: float = 0.1
    reorder_window_s: float = 30.0
    alias: float = 0.2
    verdict: float = 0.05
    labelers: int = 3


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """How users react. Rates are probabilities per request; times in seconds.

    Attributes:
        rate: Share of requests that get feedback.
        negative_if_right: P(negative) when the served answer is right.
        negative_if_wrong: P(negative) when it is wrong.
        delay_mean_s: Mean delay after the request finished.
    """

    rate: float = 0.1
    negative_if_right: float = 0.08
    negative_if_wrong: float = 0.6
    delay_mean_s: float = 10.0


@dataclass(frozen=True, slots=True, order=True)
class Scheduled(Generic[M]):
    """A message and when to deliver it; sorts by delivery time, then by ``seq``."""

    deliver_at: datetime
    seq: int
    message: M = field(compare=False)


def labels_for(served: Served, config: LabelConfig, seed: int) -> list[Scheduled[EMLabel]]:
    """The label deliveries of one served request: none, one, or a duplicated one."""
    req = served.request
    return schedule_label(
        request_rng(seed, req.index, "label"),
        config,
        index=req.index,
        request_id=req.request_id,
        finished_at=served.event.ts,
        gold=(req.gold,),
        alias_of=lambda rng: alias(req.spec.task, req.gold, rng),
        correct=served.correct,
    )


def schedule_label(
    rng: random.Random,
    config: LabelConfig,
    *,
    index: int,
    request_id: str,
    finished_at: datetime,
    gold: tuple[str, ...],
    alias_of: Callable[[random.Random], str],
    correct: bool,
) -> list[Scheduled[EMLabel]]:
    """The label deliveries of request ``index`` from its own ``rng`` (any request source).

    ``alias_of`` writes the first gold answer another way; ``correct`` is the
    verdict a verdict label gives on the served answer.
    """
    if rng.random() < config.loss:
        return []
    delay = config.delay_s
    if config.delay_mean_s > 0:
        delay += rng.expovariate(1.0 / config.delay_mean_s)
    if rng.random() < config.reorder:
        delay += rng.uniform(0.0, config.reorder_window_s)
    made_at = finished_at + timedelta(seconds=delay)
    if rng.random() < config.alias:
        variant = alias_of(rng)
        # Half the time the alias is the only gold answer: EM must normalise.
        gold = (variant,) if rng.random() < 0.5 else (*gold, variant)
    by_verdict = rng.random() < config.verdict
    label = EMLabel(
        label_id=f"lb-{request_id}",
        request_id=request_id,
        labeler_id=f"sim-labeler-{rng.randrange(max(config.labelers, 1))}",
        ts=made_at,
        gold_answers=None if by_verdict else gold,
        verdict=correct if by_verdict else None,
    )
    out = [Scheduled(made_at, 2 * index, label)]
    if rng.random() < config.duplicate:
        again = made_at + timedelta(seconds=rng.uniform(0.0, config.duplicate_delay_s))
        out.append(Scheduled(again, 2 * index + 1, label))
    return out


def feedback_for(
    served: Served, config: FeedbackConfig, seed: int
) -> list[Scheduled[UserFeedback]]:
    """The user's feedback on one served request, if any; negative more often when wrong."""
    req = served.request
    return schedule_feedback(
        request_rng(seed, req.index, "feedback"),
        config,
        index=req.index,
        request_id=req.request_id,
        finished_at=served.event.ts,
        correct=served.correct,
        gold=req.gold,
    )


def schedule_feedback(
    rng: random.Random,
    config: FeedbackConfig,
    *,
    index: int,
    request_id: str,
    finished_at: datetime,
    correct: bool,
    gold: str,
) -> list[Scheduled[UserFeedback]]:
    """The feedback of request ``index`` from its own ``rng`` (any request source)."""
    if rng.random() >= config.rate:
        return []
    right = correct
    negative = rng.random() < (config.negative_if_right if right else config.negative_if_wrong)
    kind: FeedbackKind = "thumbs"
    correction = None
    if negative:
        u = rng.random()
        if u < 0.25:
            kind = "regenerate"
        elif u < 0.5 and not right:
            kind, correction = "correction", gold
        rating = -1
    else:
        rating = 1 if rng.random() < 0.85 else 0
    at = finished_at + timedelta(seconds=1.0 + rng.expovariate(1.0 / config.delay_mean_s))
    message = UserFeedback(
        feedback_id=f"fb-{request_id}",
        request_id=request_id,
        ts=at,
        kind=kind,
        rating=rating,
        correction=correction,
    )
    return [Scheduled(at, index, message)]


def delivery_order(items: Iterable[Scheduled[M]]) -> list[Scheduled[M]]:
    """Messages in the order they are delivered."""
    return sorted(items)


class Outbox(Generic[M]):
    """Messages waiting for their delivery time (not thread-safe; guard it with a lock)."""

    def __init__(self) -> None:
        self._heap: list[Scheduled[M]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, items: Iterable[Scheduled[M]]) -> None:
        """Queue messages."""
        for item in items:
            heapq.heappush(self._heap, item)

    def due(self, now: datetime) -> list[Scheduled[M]]:
        """Remove and return the messages due at ``now``, in delivery order."""
        out: list[Scheduled[M]] = []
        while self._heap and self._heap[0].deliver_at <= now:
            out.append(heapq.heappop(self._heap))
        return out
