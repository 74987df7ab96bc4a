"""Early-stop semantics on a recorded trajectory: where a threshold would stop.

This is the offline twin of the node controller's ``should_stop`` evaluated
at each checkpoint: no stop before ``min_tokens``; then the first checkpoint
whose confidence reaches the threshold (``>=``); else the last checkpoint,
which is the natural end or the budget. A unit test replays random
trajectories through :func:`pipeline.node.decision.decide` to keep them equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas import StopReason

OFF = 1.0
"""A threshold at or above this never stops early (as on the node)."""


@dataclass(frozen=True, slots=True)
class StopPoint:
    """Where a request stops under a threshold.

    Attributes:
        index: Checkpoint index of the stop.
        tokens: Tokens generated at the stop.
        confidence: Confidence at the stop.
        reason: Why it stopped, as the node reports it.
        cut: True when the stop came before the last checkpoint (tokens were saved).
    """

    index: int
    tokens: int
    confidence: float
    reason: StopReason
    cut: bool


def stop_index(
    tokens: Sequence[int], confidence: Sequence[float], threshold: float, min_tokens: int = 0
) -> int:
    """Index of the first checkpoint with ``tokens >= min_tokens`` and ``confidence >= threshold``.

    Returns:
        That index, or the last index when no checkpoint qualifies.
    """
    last = len(tokens) - 1
    if threshold >= OFF:
        return last
    for i in range(last):
        if tokens[i] >= min_tokens and confidence[i] >= threshold:
            return i
    return last


def early_stop(
    tokens: Sequence[int],
    confidence: Sequence[float],
    threshold: float,
    *,
    min_tokens: int = 0,
    natural_end: bool = True,
) -> StopPoint:
    """The stop point of a trajectory under ``threshold``.

    Args:
        tokens: Tokens at each checkpoint, strictly increasing; the last is the end.
        confidence: Confidence at each checkpoint.
        threshold: Stop at confidence ``>=`` this; 1.0 or more is off (never stops early).
        min_tokens: No early stop before this many tokens.
        natural_end: Whether the last checkpoint is the model's own end (else the budget).

    Returns:
        The stop. On the last checkpoint the reason is ``natural_end`` when the
        model ended by itself (it would have, whatever the controller said);
        at the budget it is ``confident`` when the threshold is reached there,
        since the controller ranks a confident stop above the budget, else ``budget``.

    Raises:
        ValueError: if the trajectory is empty or its sequences differ in length.
    """
    if not tokens or len(tokens) != len(confidence):
        msg = "a trajectory needs one confidence per checkpoint, and at least one"
        raise ValueError(msg)
    i = stop_index(tokens, confidence, threshold, min_tokens)
    last = len(tokens) - 1
    reason: StopReason
    if i < last:
        reason = "confident"
    elif natural_end:
        reason = "natural_end"
    elif tokens[last] >= min_tokens and threshold < OFF and confidence[last] >= threshold:
        reason = "confident"
    else:
        reason = "budget"
    return StopPoint(
        index=i, tokens=tokens[i], confidence=confidence[i], reason=reason, cut=i < last
    )
