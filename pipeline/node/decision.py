"""The hot path: compiled rules, decisions and per-request plans.

Nothing here touches pydantic, locks or I/O. A decision is one of five shared
constants, so answering ``should_stop`` allocates nothing; a plan fixes the
rule a request uses when it starts, so a policy swap mid-request never mixes
two versions in one generation.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Literal, final

from schemas import Arm, LoadMode

DecisionReason = Literal["confident", "below_threshold", "min_tokens", "budget", "exploration"]

LOAD_MODES: tuple[LoadMode, LoadMode, LoadMode] = ("offpeak", "normal", "peak")
"""Load modes in index order: compiled rules are tuples indexed like this."""

BUCKET_PERSON = b"earlystop-plan"
"""blake2b personalisation of request bucketing; changing it reshuffles every request."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to stop now, and why. Truthy exactly when ``stop`` is True."""

    stop: bool
    reason: DecisionReason

    def __bool__(self) -> bool:
        # So `if controller.should_stop(...)` means "stop", not "got an object".
        return self.stop


CONFIDENT = Decision(stop=True, reason="confident")
BUDGET = Decision(stop=True, reason="budget")
BELOW_THRESHOLD = Decision(stop=False, reason="below_threshold")
MIN_TOKENS = Decision(stop=False, reason="min_tokens")
EXPLORATION = Decision(stop=False, reason="exploration")


@dataclass(frozen=True, slots=True)
class Rule:
    """One segment's policy for one load mode (or for exploration), as plain values.

    ``step_starts``/``step_thresholds`` are the optional schedule: from
    ``step_starts[i]`` tokens on, ``step_thresholds[i]`` replaces ``threshold``.
    ``hold_below``/``hold`` are derived so the hot path needs one comparison to
    answer both "before min_tokens" and "exploring": an exploration rule holds
    until the budget and has an unreachable threshold.
    """

    threshold: float
    min_tokens: int
    token_budget: int
    step_starts: tuple[int, ...] = ()
    step_thresholds: tuple[float, ...] = ()
    explore: bool = False
    hold_below: int = field(init=False)
    hold: Decision = field(init=False)

    def __post_init__(self) -> None:
        # Derived fields of a frozen dataclass are set once, here.
        object.__setattr__(
            self, "hold_below", self.token_budget if self.explore else self.min_tokens
        )
        object.__setattr__(self, "hold", EXPLORATION if self.explore else MIN_TOKENS)
        # 1.0 is "off": a probe can report a confidence of exactly 1.0, and a policy
        # of 1.0 must not stop early on it. inf keeps the hot path one comparison.
        if self.explore or self.threshold >= 1.0:
            object.__setattr__(self, "threshold", math.inf)
        if any(t >= 1.0 for t in self.step_thresholds):
            steps = tuple(math.inf if t >= 1.0 else t for t in self.step_thresholds)
            object.__setattr__(self, "step_thresholds", steps)

    def threshold_at(self, tokens: int) -> float | None:
        """The threshold in force after ``tokens`` tokens (1.0: off); None before ``min_tokens``."""
        if self.explore or tokens < self.min_tokens:
            return None
        threshold = self.threshold
        if self.step_starts:
            index = bisect_right(self.step_starts, tokens)
            if index:
                threshold = self.step_thresholds[index - 1]
        return min(threshold, 1.0)


def decide(rule: Rule, tokens: int, confidence: float) -> Decision:
    """Apply ``rule`` after ``tokens`` tokens at ``confidence``.

    A confident stop wins over the budget when both hold, so the event says the
    model was sure rather than cut off. A NaN confidence never stops early.
    ``Controller.should_stop`` inlines this body for speed; a property test
    keeps the two equal.
    """
    if tokens < rule.hold_below:
        return rule.hold
    threshold = rule.threshold
    if rule.step_starts:
        index = bisect_right(rule.step_starts, tokens)
        if index:
            threshold = rule.step_thresholds[index - 1]
    if confidence >= threshold:
        return CONFIDENT
    if tokens >= rule.token_budget:
        return BUDGET
    return BELOW_THRESHOLD


def buckets(request_id: str) -> tuple[float, float]:
    """Two independent uniform numbers in [0, 1) derived from ``request_id``.

    The first picks exploration, the second the canary. blake2b (not
    ``hash()``, which is salted per process) gives every node, every restart
    and the offline analysis the same answer for the same request.
    """
    digest = hashlib.blake2b(request_id.encode(), digest_size=16, person=BUCKET_PERSON).digest()
    scale = float(1 << 64)
    return (
        int.from_bytes(digest[:8], "big") / scale,
        int.from_bytes(digest[8:], "big") / scale,
    )


@final
@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What one request runs under, fixed when it starts.

    ``policy_version`` is the version that serves the request: the candidate's
    version on the canary arm, else the applied update's (0 for the default).
    """

    request_id: str
    policy_name: str
    policy_version: int
    arm: Arm
    exploration: bool
    load_mode: LoadMode
    segment_key: str
    """The policy key that matched (``tenant/task/bucket``, a task, or ``global``)."""
    rule: Rule

    @property
    def token_budget(self) -> int:
        """Generation budget in tokens."""
        return self.rule.token_budget

    @property
    def min_tokens(self) -> int:
        """No early stop before this many tokens (0 for exploration, which never stops early)."""
        return self.rule.min_tokens

    def should_stop(self, tokens_so_far: int, confidence: float) -> Decision:
        """Decide under this plan's fixed rule."""
        return decide(self.rule, tokens_so_far, confidence)

    def threshold_at(self, tokens: int) -> float | None:
        """The threshold to report in the event for a stop after ``tokens`` tokens."""
        return self.rule.threshold_at(tokens)

    @property
    def probes(self) -> bool:
        """Whether confidence probes are worth running: exploring, or a rule that can stop."""
        rule = self.rule
        return (
            self.exploration
            or rule.threshold < math.inf
            or any(t < math.inf for t in rule.step_thresholds)
        )
