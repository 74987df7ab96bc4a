"""The yardsticks: the per-segment oracle and the best static single threshold.

Both come from the simulator's ground truth (:mod:`pipeline.sim.oracle`) at
the same tolerance, on the same traffic mix (segment weights) and budget.
EM drops are signed (full-generation EM minus served EM), the definition the
optimizer certifies and the demo measures. The static baseline is one
threshold for every request: the most aggressive one, walking down from the
safest, whose EM drop on the whole traffic mix stays within epsilon (the best
a single, perfectly tuned threshold can do). A trace-driven demo computes
both on the trace's records (:func:`trace_yardsticks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.sim.model import Latent
from pipeline.sim.oracle import (
    DEFAULT_MIN_TOKENS,
    CurvePoint,
    em_curve,
    oracle_threshold,
    sample_segment,
)
from pipeline.sim.scenario import Scenario
from pipeline.sim.trace import TraceRequest, trace_latent
from schemas.trajectory import TrajectoryRecord


@dataclass(frozen=True, slots=True)
class Yardstick:
    """Expected token saving and EM drop of a policy on the traffic mix."""

    name: str
    token_saving: float
    em_drop: float
    detail: str


def yardsticks(
    scen: Scenario,
    seed: int,
    epsilon: float,
    *,
    budget: int,
    samples: int,
    at_index: int | None,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    signed: bool = True,
) -> tuple[Yardstick, Yardstick]:
    """The per-segment oracle and the static single-threshold baseline.

    ``at_index`` picks the traffic's state (0: before the drift, None: after).
    Savings are weighted by each segment's share of traffic and its tokens. The EM
    drop is ``signed`` (full-generation EM minus served EM, the optimizer's promise
    under the shipped spec) unless told otherwise.
    """
    curves: dict[str, tuple[CurvePoint, ...]] = {}
    full_tokens: dict[str, float] = {}
    for spec in scen.segments:
        latents = sample_segment(scen, spec.key, seed, samples, at_index=at_index, budget=budget)
        curves[spec.key] = em_curve(latents, _GRID, min_tokens)
        full_tokens[spec.key] = sum(lat.tokens[-1] for lat in latents) / len(latents)
    weights = {spec.key: spec.weight for spec in scen.segments}
    return _from_curves(curves, weights, full_tokens, epsilon, signed=signed)


def trace_yardsticks(
    records: Sequence[TrajectoryRecord],
    epsilon: float,
    *,
    budget: int | None = None,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    signed: bool = True,
) -> tuple[Yardstick, Yardstick]:
    """The oracle and the static baseline on captured trajectories, exactly (no sampling).

    The traffic of a trace-driven fleet (:mod:`pipeline.sim.trace`) resamples
    the records uniformly, so each segment weighs its share of the records.
    A record is the oracle's latent trajectory (:func:`~pipeline.sim.trace.trace_latent`):
    checkpoint EM against the record's gold answers, the end with ``final_answer``'s.
    Savings are net of the records' probe tokens (a rule that can stop early
    probes every checkpoint from ``min_tokens`` on), as the fleet's are.

    Raises:
        ValueError: no records.
    """
    if not records:
        msg = "trace_yardsticks needs at least one record"
        raise ValueError(msg)
    latents: dict[str, list[Latent]] = {}
    costs: dict[str, list[int]] = {}
    for record in records:
        trace = TraceRequest.of(record)
        latents.setdefault(trace.key, []).append(trace_latent(trace, budget))
        costs.setdefault(trace.key, []).append(record.probe_tokens)
    curves = {key: em_curve(found, _GRID, min_tokens, costs[key]) for key, found in latents.items()}
    full_tokens = {k: sum(lat.tokens[-1] for lat in v) / len(v) for k, v in latents.items()}
    weights = {key: float(len(found)) for key, found in latents.items()}
    return _from_curves(curves, weights, full_tokens, epsilon, signed=signed)


def _from_curves(
    curves: dict[str, tuple[CurvePoint, ...]],
    weights: dict[str, float],
    full_tokens: dict[str, float],
    epsilon: float,
    *,
    signed: bool,
) -> tuple[Yardstick, Yardstick]:
    """Both yardsticks from each segment's curve, traffic weight and mean full length."""
    total_w = sum(weights.values())
    weight = {key: w / total_w for key, w in weights.items()}
    tok_w = {k: weight[k] * full_tokens[k] for k in weight}
    tok_total = sum(tok_w.values())

    saved = drop = 0.0
    for key, curve in curves.items():
        best = oracle_threshold(curve, epsilon, signed=signed)
        if best is not None:
            saved += tok_w[key] * best.token_saving
            drop += weight[key] * _drop(best, signed)
    oracle = Yardstick("oracle per segment", saved / tok_total, drop, f"epsilon {epsilon:g}")

    chosen: tuple[float, float, float] | None = None  # threshold, saving, drop
    for j in reversed(range(len(_GRID))):
        pooled_drop = sum(weight[k] * _drop(curves[k][j], signed) for k in curves)
        if pooled_drop > epsilon:
            break
        pooled_saving = sum(tok_w[k] * curves[k][j].token_saving for k in curves) / tok_total
        if chosen is None or pooled_saving >= chosen[1]:  # net of probes: not monotone
            chosen = (_GRID[j], pooled_saving, pooled_drop)
    if chosen is None:
        static = Yardstick("static threshold", 0.0, 0.0, "no threshold meets epsilon")
    else:
        theta, saving, pooled = chosen
        static = Yardstick("static threshold", saving, pooled, f"threshold {theta:.2f}")
    return oracle, static


_GRID: tuple[float, ...] = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))


def _drop(point: CurvePoint, signed: bool) -> float:
    return point.em_drop - point.em_gain if signed else point.em_drop
