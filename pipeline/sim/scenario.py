"""Scenarios: the segments of a simulated fleet, their difficulty and calibration.

A scenario holds parameters only; all randomness comes from the seed given to
:mod:`pipeline.sim.model`. The parameters are fixed (not drawn from the seed)
so that the oracle of a scenario is one well-defined target, whatever the
seed of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from schemas import LengthBucket, Segment

ScenarioName = Literal["standard", "drift", "reasoning"]
Task = Literal["qa", "math", "extract"]

TENANTS: tuple[str, ...] = ("acme", "globex")
TASKS: tuple[Task, ...] = ("qa", "math", "extract")
BUCKETS: tuple[LengthBucket, ...] = ("short", "medium", "long")


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """The shape of a long chain of thought, for reasoning-model segments.

    With a chain spec the model draws the whole chain's length first and puts
    the moment the answer is found at a fraction of it; without one (the
    ``standard`` and ``drift`` scenarios) it keeps its original story.

    Attributes:
        length_tokens: Median natural length of a solvable request's chain, at difficulty 0.
        found_fraction: Median share of the chain generated before the answer is found.
        fraction_sd: Spread of that share (standard deviation on the logit scale).
        first_right: Chance that the first answer found is the right one (at difficulty 0).
        overthink: Chance that a right answer is later argued away and stays wrong (at
            difficulty 0).
        self_correct: Chance that a wrong first answer is corrected later in the chain (at
            difficulty 0).
        ramp_tokens: Tokens over which confidence climbs after an answer is found.
        max_tokens: Longest natural chain (the budget usually cuts first).
    """

    length_tokens: float
    found_fraction: float
    fraction_sd: float = 0.7
    first_right: float = 0.9
    overthink: float = 0.06
    self_correct: float = 0.4
    ramp_tokens: float = 384.0
    max_tokens: int = 16_384


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """How requests of one segment behave.

    Attributes:
        tenant: Tenant name.
        task: Task type; it also picks the kind of answers (cities, numbers, names).
        bucket: Prompt length bucket.
        weight: Relative share of traffic.
        difficulty: 0 (easy) to 1 (hard): fewer solvable requests, answers found later.
        conf_bias: Logit offset of confidence; above 0 over-confident, below 0 under-confident.
        find_tokens: Median tokens before the answer is found, at difficulty 0.
        token_budget: Budget the scenario's policy is expected to set.
        chain: Long chain-of-thought shape (reasoning models); None keeps the standard story.
    """

    tenant: str
    task: Task
    bucket: LengthBucket
    weight: float
    difficulty: float
    conf_bias: float
    find_tokens: float
    token_budget: int
    chain: ChainSpec | None = None

    @property
    def key(self) -> str:
        """The segment key, ``"tenant/task/bucket"``."""
        return f"{self.tenant}/{self.task}/{self.bucket}"

    def segment(self) -> Segment:
        """The contract's segment features of these requests."""
        return Segment(task=self.task, length_bucket=self.bucket, tenant=self.tenant)


@dataclass(frozen=True, slots=True)
class Drift:
    """From request ``start_index`` on, one segment gets harder and more over-confident.

    That is the usual shape of a model swap or a shift in traffic: the model
    is as sure of itself as before but right less often, so a threshold that
    was safe now lets wrong answers through.
    """

    segment_key: str
    start_index: int
    difficulty_delta: float = 0.3
    conf_bias_delta: float = 0.6
    model: str | None = "sim-llm-v2"
    """Model name reported after the drift (None: unchanged)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A simulated fleet's traffic: segments, checkpoints, load and an optional drift.

    Attributes:
        name: Scenario name.
        segments: The segment specs, in a fixed order.
        checkpoint_every: Tokens between trajectory checkpoints.
        model: Model name reported by the nodes.
        load_period_s: Period of the simulated daily load cycle, in seconds.
        ms_per_token: Generation speed at zero load.
        drift: The drift switch, if any.
    """

    name: str
    segments: tuple[SegmentSpec, ...]
    checkpoint_every: int = 16
    model: str = "sim-llm-v1"
    load_period_s: float = 300.0
    ms_per_token: float = 12.0
    drift: Drift | None = None

    def spec(self, key: str) -> SegmentSpec:
        """The segment spec of ``key`` before any drift.

        Raises:
            KeyError: if the scenario has no such segment.
        """
        for spec in self.segments:
            if spec.key == key:
                return spec
        raise KeyError(key)

    def spec_at(self, key: str, index: int | None) -> SegmentSpec:
        """The spec of ``key`` in force for request ``index`` (None: after every drift)."""
        spec = self.spec(key)
        drift = self.drift
        if drift is None or drift.segment_key != key:
            return spec
        if index is not None and index < drift.start_index:
            return spec
        return replace(
            spec,
            difficulty=min(1.0, spec.difficulty + drift.difficulty_delta),
            conf_bias=spec.conf_bias + drift.conf_bias_delta,
        )

    def model_at(self, index: int) -> str:
        """The model name serving request ``index``."""
        drift = self.drift
        if drift is not None and drift.model and index >= drift.start_index:
            return drift.model
        return self.model


# Why these numbers: math is over-confident and extraction under-confident,
# as in the real sample (data/real/); globex serves a model that is
# sure of itself more often than it should be; long prompts are harder.
_TASK = {
    "qa": (0.20, 0.00, 48.0),
    "math": (0.45, 0.35, 96.0),
    "extract": (0.30, -0.30, 64.0),
}
_TENANT = {"acme": (0.00, 0.00, 1.0), "globex": (0.10, 0.45, 0.6)}
_BUCKET = {"short": (0.00, 1.0, 256), "medium": (0.08, 1.25, 384), "long": (0.18, 1.6, 512)}


def standard_segments() -> tuple[SegmentSpec, ...]:
    """The 18 segments of the standard fleet: 2 tenants x 3 tasks x 3 buckets."""
    specs = []
    for tenant in TENANTS:
        t_diff, t_bias, t_weight = _TENANT[tenant]
        for task in TASKS:
            k_diff, k_bias, find = _TASK[task]
            for bucket in BUCKETS:
                b_diff, b_find, budget = _BUCKET[bucket]
                specs.append(
                    SegmentSpec(
                        tenant=tenant,
                        task=task,
                        bucket=bucket,
                        weight=t_weight * (2.0 if bucket == "short" else 1.0),
                        difficulty=round(k_diff + t_diff + b_diff, 3),
                        conf_bias=round(k_bias + t_bias, 3),
                        find_tokens=find * b_find,
                        token_budget=budget,
                    )
                )
    return tuple(specs)


# The reasoning fleet (docs/reasoning-scenario.md has the sources): chains of
# 1k-8k tokens whose answer is found at a fraction of the chain, median 40-55%
# by task (DEER; Liu & Wang 2025); math over-confident as in the standard
# fleet, qa and extraction near calibrated. Task: (difficulty, conf_bias,
# chain tokens, found fraction, overthink); bucket: (difficulty, chain scale, budget).
_R_TASK = {
    "qa": (0.15, 0.05, 1400.0, 0.45, 0.05),
    "math": (0.35, 0.30, 2800.0, 0.55, 0.07),
    "extract": (0.20, 0.00, 1100.0, 0.40, 0.04),
}
_R_BUCKET = {"short": (0.00, 1.0, 4096), "medium": (0.08, 1.3, 6144), "long": (0.15, 1.7, 8192)}
REASONING_CHECKPOINT_EVERY = 64
"""Tokens between checkpoints of the reasoning fleet: 8192 tokens make 128 points."""


def reasoning_segments() -> tuple[SegmentSpec, ...]:
    """The 18 segments of a fleet serving a reasoning model: long chains of thought."""
    specs = []
    for tenant in TENANTS:
        t_diff, t_bias, t_weight = _TENANT[tenant]
        for task in TASKS:
            k_diff, k_bias, chain_tokens, fraction, overthink = _R_TASK[task]
            for bucket in BUCKETS:
                b_diff, b_scale, budget = _R_BUCKET[bucket]
                chain = ChainSpec(
                    length_tokens=chain_tokens * b_scale,
                    found_fraction=fraction,
                    overthink=overthink,
                )
                specs.append(
                    SegmentSpec(
                        tenant=tenant,
                        task=task,
                        bucket=bucket,
                        weight=t_weight * (2.0 if bucket == "short" else 1.0),
                        difficulty=round(k_diff + t_diff + b_diff, 3),
                        conf_bias=round(k_bias + t_bias, 3),
                        find_tokens=round(chain.length_tokens * fraction, 1),
                        token_budget=budget,
                        chain=chain,
                    )
                )
    return tuple(specs)


DRIFT_SEGMENT = "acme/qa/short"
"""The segment the ``drift`` scenario makes harder: a busy, easy one, so it shows."""


def scenario(
    name: ScenarioName = "standard", *, drift_at: int = 5_000, drift_segment: str = DRIFT_SEGMENT
) -> Scenario:
    """Build a named scenario.

    Args:
        name: ``"standard"`` (stationary; the default, and the one ratio figures
            use), ``"drift"``, or ``"reasoning"`` (a stationary fleet of long
            chains of thought, see ``docs/reasoning-scenario.md``).
        drift_at: For ``"drift"``: the index of the first drifted request.
        drift_segment: For ``"drift"``: the segment key that gets harder.

    Raises:
        KeyError: if ``drift_segment`` is not a segment of the scenario.
    """
    if name == "reasoning":
        return Scenario(
            name=name,
            segments=reasoning_segments(),
            checkpoint_every=REASONING_CHECKPOINT_EVERY,
            model="sim-reasoner-v1",
        )
    segments = standard_segments()
    if name == "standard":
        return Scenario(name=name, segments=segments)
    base = Scenario(name=name, segments=segments)
    base.spec(drift_segment)  # fail early on an unknown key
    return replace(base, drift=Drift(segment_key=drift_segment, start_index=drift_at))
