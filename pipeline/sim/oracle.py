"""Ground truth: the true EM drop and token saving per threshold, and the oracle threshold.

Computed by Monte Carlo on a large sample of the scenario's own model, per
segment, from a random stream the fleet never uses (so a run's requests are
a fresh sample). Tests and benchmarks compare the optimizer with it.

The oracle threshold follows the optimizer's fixed-sequence order: walk the
grid from the safest threshold down while the true EM drop stays within
epsilon, and keep the last one that did. Where the drop curve is not
monotone (trial answers flicker) this is the most aggressive threshold the
optimizer could reach, not merely the lowest one under epsilon somewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from pipeline.sim.model import Latent, request_rng, sample_latent
from pipeline.sim.scenario import Scenario, ScenarioName, scenario

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))
"""Thresholds 0.50, 0.51, ..., 1.00; 1.00 never stops early (confidence stays below 1)."""
DEFAULT_MIN_TOKENS = 32
"""The packaged default policy's ``min_tokens``."""
DEFAULT_SAMPLES = 20_000


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """What one threshold does to a segment.

    Attributes:
        threshold: The threshold.
        em_drop: P(full answer right and early answer wrong): the optimizer's loss.
        em_gain: P(full answer wrong and early answer right).
        early_em: EM of the answer served under the threshold.
        token_saving: 1 - tokens used / tokens of the full generations.
    """

    threshold: float
    em_drop: float
    em_gain: float
    early_em: float
    token_saving: float


@dataclass(frozen=True, slots=True)
class OracleRow:
    """The ground truth of one segment.

    Attributes:
        segment_key: ``"tenant/task/bucket"``.
        threshold: The oracle threshold; None when even the safest grid point breaks epsilon.
        em_drop: True EM drop at the oracle threshold (0 when None: no early stop).
        token_saving: Expected token saving at the oracle threshold (0 when None).
        full_em: EM of full generations.
        epsilon: The tolerance.
        min_tokens: No early stop before this many tokens.
        samples: Monte Carlo sample size.
        curve: The whole grid, in increasing threshold order.
    """

    segment_key: str
    threshold: float | None
    em_drop: float
    token_saving: float
    full_em: float
    epsilon: float
    min_tokens: int
    samples: int
    curve: tuple[CurvePoint, ...]


def sample_segment(
    scen: Scenario,
    key: str,
    seed: int,
    n: int,
    *,
    at_index: int | None = None,
    budget: int | None = None,
) -> list[Latent]:
    """Draw ``n`` latent trajectories of segment ``key`` (a stream the fleet never uses).

    Args:
        scen: The scenario.
        key: Segment key.
        seed: Random seed.
        n: Sample size.
        at_index: The request index whose spec applies (None: after every drift).
        budget: Token budget; the segment's when None.
    """
    spec = scen.spec_at(key, at_index)
    cut = spec.token_budget if budget is None else budget
    stream = f"oracle/{key}"
    every = scen.checkpoint_every
    return [sample_latent(spec, every, cut, request_rng(seed, i, stream)) for i in range(n)]


def em_curve(
    latents: Iterable[Latent],
    grid: Sequence[float],
    min_tokens: int = 0,
    probe_costs: Sequence[int] | None = None,
) -> tuple[CurvePoint, ...]:
    """EM drop, gain, early EM and token saving of each threshold of ``grid`` on a sample.

    One pass per trajectory: the stop index only moves forward as the
    threshold rises, so the cost is O(checkpoints + grid) per trajectory.
    ``probe_costs`` (one per latent, in order) charges a rule below 1.0 a
    probe at every checkpoint from ``min_tokens`` on up to its stop (the end is
    the answer's own extraction, not a probe), so savings are net of probes.
    """
    thresholds = sorted(grid)
    m = len(thresholds)
    drop, gain, right, used = [0] * m, [0] * m, [0] * m, [0] * m
    full_tokens = count = 0
    costs = iter(probe_costs) if probe_costs is not None else None
    for lat in latents:
        tokens, conf, correct = lat.tokens, lat.confidence, lat.correct
        last = len(tokens) - 1
        full_right = correct[last]
        full_tokens += tokens[last]
        count += 1
        cost = next(costs) if costs is not None else 0
        probed = list(accumulate(int(t >= min_tokens) for t in tokens[:last])) or [0]
        i = 0
        for j, theta in enumerate(thresholds):
            while i < last and (tokens[i] < min_tokens or conf[i] < theta):
                i += 1
            early_right = correct[i]
            drop[j] += full_right and not early_right
            gain[j] += early_right and not full_right
            right[j] += early_right
            used[j] += tokens[i]
            if cost and theta < 1.0:
                used[j] += cost * probed[min(i, last - 1)] if last else 0
    if not count:
        msg = "em_curve needs at least one trajectory"
        raise ValueError(msg)
    return tuple(
        CurvePoint(
            threshold=theta,
            em_drop=drop[j] / count,
            em_gain=gain[j] / count,
            early_em=right[j] / count,
            token_saving=1.0 - used[j] / full_tokens,
        )
        for j, theta in enumerate(thresholds)
    )


def oracle_threshold(
    curve: Sequence[CurvePoint], epsilon: float, *, signed: bool = False
) -> CurvePoint | None:
    """The best grid point a walk down from the safest reaches within ``epsilon``.

    Best: the largest token saving among the points the walk passes while
    the EM drop stays within ``epsilon`` (ties: the lower threshold).
    ``signed`` judges the EM drop the operator measures (``em_drop - em_gain``: an
    early answer that fixes a wrong full one counts in favour), else the one-sided loss.
    Without probe costs savings only grow as the threshold falls, so this is the
    walk's last point; with them (:func:`em_curve`) a low threshold can save less.
    """
    chosen = None
    for point in sorted(curve, key=lambda p: p.threshold, reverse=True):
        if (point.em_drop - point.em_gain if signed else point.em_drop) > epsilon:
            break
        if chosen is None or point.token_saving >= chosen.token_saving:
            chosen = point
    return chosen


def ground_truth(
    scen: Scenario | ScenarioName,
    seed: int,
    epsilon: float,
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    samples: int = DEFAULT_SAMPLES,
    at_index: int | None = None,
    segments: Iterable[str] | None = None,
    budget: int | None = None,
    on_segment: Callable[[str], None] | None = None,
    signed: bool = False,
) -> dict[str, OracleRow]:
    """The oracle of every segment (or of ``segments``) of a scenario.

    Args:
        scen: A scenario, or the name of a built-in one.
        seed: Random seed of the Monte Carlo sample.
        epsilon: Tolerated EM drop.
        grid: Candidate thresholds.
        min_tokens: No early stop before this many tokens.
        samples: Monte Carlo sample size per segment (the standard error of a
            drop near epsilon is about ``sqrt(epsilon / samples)``).
        at_index: Request index whose specs apply (None: after every drift).
        segments: Segment keys to compute; all when None.
        budget: Token budget of the fleet; each segment's spec budget when None.
            Pass the deployed policy's budget to compare with a fleet running it.
        on_segment: Called with each segment key before it is computed (progress).
        signed: Judge the signed EM drop (full minus early EM) instead of the one-sided loss.

    Raises:
        KeyError: if a key in ``segments`` is not in the scenario.
        ValueError: if ``grid`` is empty or ``samples`` is not positive.
    """
    if not grid or samples < 1:
        msg = "ground_truth needs a non-empty grid and a positive sample size"
        raise ValueError(msg)
    scen = scenario(scen) if isinstance(scen, str) else scen
    keys = [spec.key for spec in scen.segments] if segments is None else list(segments)
    rows: dict[str, OracleRow] = {}
    for key in keys:
        if on_segment is not None:
            on_segment(key)
        latents = sample_segment(scen, key, seed, samples, at_index=at_index, budget=budget)
        curve = em_curve(latents, grid, min_tokens)
        best = oracle_threshold(curve, epsilon, signed=signed)
        rows[key] = OracleRow(
            segment_key=key,
            threshold=best.threshold if best else None,
            em_drop=best.em_drop if best else 0.0,
            token_saving=best.token_saving if best else 0.0,
            full_em=sum(lat.correct[-1] for lat in latents) / len(latents),
            epsilon=epsilon,
            min_tokens=min_tokens,
            samples=samples,
            curve=curve,
        )
    return rows
