"""The framework adapters, driven by small fakes of transformers and llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.node import Controller, LlamaCppStopping, TransformersStopping, compile_snapshot
from pipeline.node.decision import Decision, RequestPlan
from schemas import PolicyBody, SegmentPolicy

PROMPT = 5


@dataclass
class FakeIds:
    """Just enough of a torch LongTensor of shape (1, n)."""

    n: int

    @property
    def shape(self) -> tuple[int, int]:
        return (1, self.n)


@dataclass
class FakeLogits:
    """Carries the confidence a real confidence function would compute."""

    confidence: float


@dataclass
class Recorder:
    calls: list[int] = field(default_factory=list)

    def __call__(self, ids: Any, scores: FakeLogits) -> float:
        self.calls.append(ids.n if isinstance(ids, FakeIds) else len(ids))
        return scores.confidence


def controller(exploration: float = 0.0) -> Controller:
    policy = SegmentPolicy(thresholds={"normal": 0.8}, min_tokens=3, token_budget=12)
    body = PolicyBody(segments={"global": policy}, exploration_share=exploration)
    return Controller(compile_snapshot(body, policy_name="p", version=1, source="broker"))


def generate_hf(criterion: TransformersStopping, confidences: list[float]) -> int:
    """A transformers-like loop: one token per step, then ask the criterion."""
    for step, confidence in enumerate(confidences, start=1):
        if criterion(FakeIds(PROMPT + step), FakeLogits(confidence)):
            return step
    return len(confidences)


def test_transformers_criterion_stops_at_the_first_confident_checkpoint() -> None:
    ctl = controller()
    confidence = Recorder()
    criterion = TransformersStopping(ctl, ctl.begin("r1", "qa"), confidence, prompt_tokens=PROMPT)
    stopped = generate_hf(criterion, [0.99, 0.99, 0.5, 0.7, 0.85, 0.9])
    assert stopped == 5
    assert criterion.last_decision is not None and criterion.last_decision.reason == "confident"
    assert confidence.calls == [PROMPT + 3, PROMPT + 4, PROMPT + 5]  # none before min_tokens


def test_check_every_limits_confidence_calls_and_the_budget_still_stops() -> None:
    ctl = controller()
    confidence = Recorder()
    seen: list[tuple[int, float, Decision]] = []
    criterion = TransformersStopping(
        ctl,
        ctl.begin("r1", "qa"),
        confidence,
        prompt_tokens=PROMPT,
        check_every=4,
        on_checkpoint=lambda t, c, d: seen.append((t, c, d)),
    )
    assert generate_hf(criterion, [0.1] * 20) == 12
    # Multiples of check_every from min_tokens (3) on: aligned with the
    # checkpoints of exploration trajectories, whatever min_tokens is.
    assert [t for t, _, _ in seen] == [4, 8, 12]
    assert criterion.last_decision is not None and criterion.last_decision.reason == "budget"


def test_llama_callback_counts_generated_tokens_after_the_prompt() -> None:
    ctl = controller()
    callback = LlamaCppStopping(ctl, ctl.begin("r1", "qa"), Recorder(), prompt_tokens=PROMPT)
    tokens = list(range(PROMPT))
    steps = 0
    for confidence in [0.2, 0.3, 0.4, 0.95]:
        tokens.append(0)
        steps += 1
        if callback(tokens, FakeLogits(confidence)):
            break
    assert steps == 4 and callback.tokens == 4


def exploring_plan(ctl: Controller) -> RequestPlan:
    plan = ctl.begin("e", "qa")
    while not plan.exploration:
        plan = ctl.begin(plan.request_id + "e", "qa")
    return plan


def test_exploration_runs_to_the_budget_and_records_every_checkpoint() -> None:
    ctl = controller(exploration=0.5)
    seen: list[int] = []
    callback = LlamaCppStopping(
        ctl,
        exploring_plan(ctl),
        Recorder(),
        prompt_tokens=0,
        on_checkpoint=lambda t, c, d: seen.append(t),
    )
    tokens: list[int] = []
    while True:
        tokens.append(1)
        if callback(tokens, FakeLogits(1.0)):
            break
    assert len(tokens) == 12 and seen == list(range(1, 13))


def test_batches_are_refused() -> None:
    ctl = controller()
    criterion = TransformersStopping(ctl, ctl.begin("r", "qa"), Recorder(), prompt_tokens=0)

    class Batch:
        shape = (2, 9)

    with pytest.raises(ValueError, match="batch of 2"):
        criterion(Batch(), FakeLogits(1.0))
