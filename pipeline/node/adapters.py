"""Adapters from real generation loops to the controller.

Both are plain callables with the signature their framework expects, so this
module imports no framework: torch, transformers and llama_cpp stay unloaded
until the caller's own code loads them. Each adapter serves one request (one
:class:`RequestPlan`); build a new one per request, batch size 1.

- :class:`TransformersStopping`: ``(input_ids, scores, **kwargs) -> bool``,
  for ``generate(stopping_criteria=StoppingCriteriaList([...]))``.
- :class:`LlamaCppStopping`: ``(tokens, logits) -> bool``, for llama-cpp-python's
  ``stopping_criteria``.

The confidence function gets the framework's own arguments and returns a
float in [0, 1]; it runs only at checkpoints (every ``check_every`` tokens
from ``plan.min_tokens`` on), because real confidence probes are costly.
Between checkpoints only the token budget is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.node.controller import Controller
from pipeline.node.decision import (
    BELOW_THRESHOLD,
    BUDGET,
    EXPLORATION,
    MIN_TOKENS,
    Decision,
    RequestPlan,
)

ConfidenceFn = Callable[[Any, Any], float]
"""``(ids_or_tokens, scores_or_logits) -> confidence`` in the framework's own types."""

CheckpointHook = Callable[[int, float, Decision], None]
"""Called at each checkpoint with tokens so far, confidence and the decision."""


class _Stopping:
    def __init__(
        self,
        controller: Controller,
        plan: RequestPlan,
        confidence: ConfidenceFn,
        *,
        prompt_tokens: int,
        check_every: int = 1,
        on_checkpoint: CheckpointHook | None = None,
    ) -> None:
        if check_every < 1:
            msg = f"check_every must be at least 1, got {check_every}"
            raise ValueError(msg)
        self.controller = controller
        self.plan = plan
        self._confidence = confidence
        self._prompt_tokens = prompt_tokens
        self._check_every = check_every
        self._on_checkpoint = on_checkpoint
        self.last_decision: Decision | None = None
        """The decision of the latest call: its reason is the event's stop reason."""
        self.last_confidence: float | None = None
        """Confidence at the latest checkpoint."""
        self.tokens: int = 0
        """Tokens generated so far, as of the latest call."""

    def _step(self, generated: int, ids: Any, scores: Any) -> bool:
        self.tokens = generated
        plan = self.plan
        # Checkpoints sit at multiples of check_every, like the checkpoints of
        # exploration trajectories, so a live node stops where the optimizer's
        # replay of those trajectories says it would.
        checkpoint = generated >= plan.min_tokens and generated % self._check_every == 0
        if not checkpoint:
            if generated >= plan.token_budget:
                decision = BUDGET
            elif plan.exploration:
                decision = EXPLORATION
            elif generated < plan.min_tokens:
                decision = MIN_TOKENS
            else:  # the last checkpoint was below the threshold, or we would have stopped
                decision = BELOW_THRESHOLD
            self.last_decision = decision
            return decision.stop
        confidence = float(self._confidence(ids, scores))
        decision = self.controller.should_stop(plan, generated, confidence)
        self.last_confidence = confidence
        self.last_decision = decision
        if self._on_checkpoint is not None:
            self._on_checkpoint(generated, confidence, decision)
        return decision.stop


class TransformersStopping(_Stopping):
    """A transformers-style stopping criterion over the controller.

    Args:
        controller: The node's controller.
        plan: This request's plan, from ``controller.begin``.
        confidence: ``(input_ids, scores) -> float``.
        prompt_tokens: Length of the prompt in ``input_ids`` (generated = total - prompt).
        check_every: Evaluate confidence every this many tokens.
        on_checkpoint: Optional hook, e.g. to record an exploration trajectory.
    """

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        """True to stop generating; ``input_ids`` holds the prompt and the tokens so far."""
        shape = input_ids.shape
        if len(shape) > 1 and shape[0] != 1:
            msg = f"one stopping criterion serves one request; got a batch of {shape[0]}"
            raise ValueError(msg)
        return self._step(int(shape[-1]) - self._prompt_tokens, input_ids, scores)


class LlamaCppStopping(_Stopping):
    """A llama.cpp-style stopping callback over the controller.

    Args:
        controller: The node's controller.
        plan: This request's plan, from ``controller.begin``.
        confidence: ``(tokens, logits) -> float``.
        prompt_tokens: Length of the prompt in ``tokens`` (generated = len - prompt).
        check_every: Evaluate confidence every this many tokens.
        on_checkpoint: Optional hook, e.g. to record an exploration trajectory.
    """

    def __call__(self, tokens: Any, logits: Any) -> bool:
        """True to stop generating; ``tokens`` holds the prompt and the tokens so far."""
        return self._step(len(tokens) - self._prompt_tokens, tokens, logits)
