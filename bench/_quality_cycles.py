"""Repeated optimizer cycles on a stationary stream, as the controller runs them.

Per seed the certificate book starts empty; every cycle adds ``per_segment``
fresh exploration samples to each of the 18 segments (:func:`advance`), and a
proposal is made from the book (the step limit lifted). Each cycle's chosen
thresholds are judged on the held-out truth: tokens saved against the oracle,
and whether any deployed threshold's true EM drop on its population exceeds
its epsilon. The promise is per (segment, mode): the share of (segment, seed)
pairs that ever violate, over all cycles, must stay within delta; the
family-wise figure (seeds with any violation) is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.optimizer import ExplorationBatch, PolicySpec, Trajectory, optimize
from pipeline.optimizer.certify import CertificateBook, advance
from pipeline.optimizer.curve import Shape, evaluate
from pipeline.optimizer.proposal import SegmentDecision
from pipeline.sim import sample_segment
from schemas import LoadMode

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")


@dataclass
class CycleTally:
    """Per mode: saving ratio per cycle (one list per seed) and violations."""

    ratios: dict[str, list[list[float]]] = field(default_factory=dict)
    pair_violations: dict[str, int] = field(default_factory=dict)
    population_violations: dict[str, int] = field(default_factory=dict)
    populations_used: dict[str, int] = field(default_factory=dict)
    """(population, seed) pairs that some segment was served from."""
    seed_violations: dict[str, int] = field(default_factory=dict)
    seeds: int = 0
    segments: int = 0
    restarts: int = 0
    scheduled: dict[str, int] = field(default_factory=dict)
    """Per mode: segment decisions served by a schedule, over all seeds and cycles."""

    def mean_ratio(self, mode: str, cycle: int) -> float:
        """Mean over seeds of the saving ratio at ``cycle`` (0-based)."""
        values = [r[cycle] for r in self.ratios[mode]]
        return sum(values) / len(values)


def shape_of(decision: SegmentDecision) -> Shape | None:
    """The schedule shape a decision serves (None: a plain threshold)."""
    if decision.schedule is None:
        return None
    start, after = decision.schedule
    return (start, round(decision.threshold - after, 6))


def as_batch(latents: Iterable[Any]) -> ExplorationBatch:
    """Simulated requests as exploration trajectories (each runs to its natural end)."""
    return ExplorationBatch.from_trajectories(
        Trajectory(lat.tokens, lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1])
        for lat in latents
    )


def batch(scen: Any, key: str, seed: int, n: int) -> ExplorationBatch:
    """``n`` exploration trajectories of segment ``key`` drawn with ``seed``."""
    return as_batch(sample_segment(scen, key, seed, n))


def replay(
    trajectories: ExplorationBatch, theta: float, shape: Shape, min_tokens: int, *, signed: bool
) -> tuple[float, float]:
    """Token saving and EM drop (signed, else one-sided) of a one-step schedule."""
    curve = evaluate(trajectories, (theta,), min_tokens, 4096, shape)
    drop = curve.signed_drop() if signed else curve.em_drop()
    return float(curve.token_saving()[0]), float(drop[0])


def repeated_cycles(
    spec: PolicySpec, env: Any, seeds: int, cycles: int, per_segment: int
) -> CycleTally:
    """Run ``cycles`` anytime cycles per seed; ``env`` is bench_quality's ``Setup``."""
    truth, grid, keys = env.truth, env.grid, list(env.truth.curves)
    tally = CycleTally(seeds=seeds, segments=len(keys))
    for mode in MODES:
        tally.ratios[mode], tally.pair_violations[mode], tally.seed_violations[mode] = [], 0, 0
        tally.population_violations[mode], tally.populations_used[mode] = 0, 0
        tally.scheduled[mode] = 0
    start = time.monotonic()
    for seed in range(seeds):
        book = CertificateBook.empty(spec)
        body = None
        bad: dict[str, set[str]] = {mode: set() for mode in MODES}
        bad_pops: dict[str, set[str]] = {mode: set() for mode in MODES}
        used: dict[str, set[str]] = {mode: set() for mode in MODES}
        ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
        for cycle in range(cycles):
            fresh = {k: batch(env.scen, k, 10_000 * (seed + 1) + cycle, per_segment) for k in keys}
            book, events = advance(book, spec, fresh, current=body)
            tally.restarts += sum("ends after" in e for e in events)
            proposal = optimize(spec, {}, current=body, book=book)
            body = proposal.body
            for mode in MODES:
                chosen = {k: proposal.decision(k, mode).threshold for k in keys}
                shapes = {k: shape_of(proposal.decision(k, mode)) for k in keys}
                best = truth.saved(env.oracle[mode], grid)
                got = truth.saved(chosen, grid, shapes)
                ratios[mode].append(got / best if best > 0 else 1.0)
                tally.scheduled[mode] += sum(s is not None for s in shapes.values())
                for d in proposal.decisions:
                    if d.mode == mode and d.key in truth.curves and d.population is not None:
                        used[mode].add(d.population)
                        j = grid.index(d.threshold)
                        if truth.drop(d.population, j, equal=True, shape=shape_of(d)) > d.epsilon:
                            bad[mode].add(d.key)
                            bad_pops[mode].add(d.population)
        for mode in MODES:
            tally.ratios[mode].append(ratios[mode])
            tally.pair_violations[mode] += len(bad[mode])
            tally.population_violations[mode] += len(bad_pops[mode])
            tally.populations_used[mode] += len(used[mode])
            tally.seed_violations[mode] += bool(bad[mode])
        took = time.monotonic() - start
        print(f"  {cycles} cycles x {per_segment} per segment: seed {seed + 1} of {seeds}, "
              f"{took:.0f} s", flush=True)  # fmt: skip
    return tally
