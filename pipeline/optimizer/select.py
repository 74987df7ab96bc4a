"""One optimizer cycle: per policy key and load mode, a certified threshold and its record.

Steps, each a choice that keeps the guarantee:

1. Evaluate every ``tenant/task/length`` sample on the spec's grid, with that
   key's own ``min_tokens``; pool curves by task and globally (curves add).
2. Each key is tested on the most specific population, among itself, its
   task and ``global``, with at least ``min_samples`` samples. A key without
   enough samples of its own is tested on pooled data, with its own epsilon:
   its threshold is then certified for the pooled population only.
3. Per load mode, the distinct (population, epsilon) tests are counted and
   delta is split across them (Bonferroni) as the spec says.
4. The step limit picks the most aggressive threshold that is both certified
   (fixed-sequence testing certifies every rejected threshold at once, see
   :mod:`pipeline.optimizer.ltt`) and within ``max_step`` of the current one.
   Safer moves are never limited. Nothing certified means 1.0, never stopping early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
from pydantic import ValidationError

from pipeline.optimizer.anytime import candidate_order
from pipeline.optimizer.certify import CertificateBook, Chain, advance
from pipeline.optimizer.curve import Curve, ExplorationBatch, after_step, evaluate
from pipeline.optimizer.errors import OptimizerError
from pipeline.optimizer.exploration import exploration_for
from pipeline.optimizer.ltt import (
    LttResult,
    clopper_pearson_upper,
    empirical_oracle,
    hoeffding_upper,
    learn_then_test,
    signed_upper,
)
from pipeline.optimizer.pareto import ParetoPoint, pareto_points
from pipeline.optimizer.proposal import Guarantee, Proposal, SegmentDecision
from pipeline.optimizer.spec import PolicySpec
from schemas import (
    GLOBAL_SEGMENT,
    LoadMode,
    PolicyBody,
    Segment,
    SegmentPolicy,
    segment_ancestors,
)

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
_TOLERANCE = 1e-9
"""Float slack when comparing thresholds: 0.95 - 0.05 must reach the grid point 0.90."""


def _leaf_segment(key: str) -> Segment:
    parts = key.split("/")
    try:
        if len(parts) != 3:
            raise ValueError(key)
        return Segment.model_validate(
            {"tenant": parts[0], "task": parts[1], "length_bucket": parts[2]}
        )
    except (ValueError, ValidationError):
        msg = f"samples must be keyed by 'tenant/task/length_bucket', got {key!r}"
        raise OptimizerError(msg) from None


def current_threshold(body: PolicyBody, key: str, mode: LoadMode) -> float:
    """The threshold ``body`` applies to requests of ``key`` in ``mode`` (parents fill in)."""
    for candidate in segment_ancestors(key):
        policy = body.segments.get(candidate)
        if policy is not None:
            return policy.thresholds.get(mode, policy.thresholds["normal"])
    return body.segments[GLOBAL_SEGMENT].thresholds["normal"]  # unreachable: global required


def current_schedule(body: PolicyBody, key: str, mode: LoadMode) -> tuple[int, float] | None:
    """The first schedule step ``body`` applies to ``key`` in ``mode``, if any (parents fill in)."""
    for candidate in segment_ancestors(key):
        policy = body.segments.get(candidate)
        if policy is not None:
            steps = policy.schedules.get(mode, policy.schedule)
            return steps[0] if steps else None
    return None


def limit_step(grid: tuple[float, ...], proposed: int, current: float, max_step: float) -> int:
    """Grid index to deploy: ``proposed``, or the nearest safer one within ``max_step``.

    Every grid index at or above ``proposed`` must be certified (fixed-sequence
    testing guarantees it), so the result is too. ``grid[-1]`` is 1.0, which
    is never more aggressive than ``current``, so a result always exists.
    """
    if grid[proposed] >= current - _TOLERANCE:
        return proposed
    floor = current - max_step - _TOLERANCE
    for j in range(proposed, len(grid)):
        if grid[j] >= floor:
            return j
    return len(grid) - 1


def _populations(
    spec: PolicySpec, samples: Mapping[str, ExplorationBatch | Curve], grid: tuple[float, ...]
) -> dict[str, Curve]:
    curves: dict[str, Curve] = {}
    pooled: dict[str, Curve] = {GLOBAL_SEGMENT: Curve.empty(grid)}
    for key, data in samples.items():
        segment = _leaf_segment(key)
        if isinstance(data, Curve):
            if data.grid != grid:
                msg = f"the curve of {key!r} is not on the spec's grid"
                raise OptimizerError(msg)
            curve = data
        else:
            settings = spec.settings_for(key)
            curve = evaluate(data, grid, settings.min_tokens, settings.token_budget)
        curves[key] = curve
        pooled[segment.task] = pooled.get(segment.task, Curve.empty(grid)) + curve
        pooled[GLOBAL_SEGMENT] = pooled[GLOBAL_SEGMENT] + curve
    return curves | pooled


def _policy_keys(spec: PolicySpec, leaves: Iterable[str], current: PolicyBody) -> list[str]:
    levels = spec.segments.levels
    known = set(leaves) | set(current.segments)
    found = {key for key in known if key.count("/") == 2}
    tasks = {key.split("/")[1] for key in found} | {
        key for key in known if "/" not in key and key != GLOBAL_SEGMENT
    }
    keys = (sorted(found) if "segment" in levels else []) + (
        sorted(tasks) if "task" in levels else []
    )
    return [*keys, GLOBAL_SEGMENT]


def _population(key: str, curves: Mapping[str, Curve], min_samples: int) -> str | None:
    for candidate in segment_ancestors(key):
        curve = curves.get(candidate)
        if curve is not None and curve.n >= min_samples:
            return candidate
    return None


def _deltas(spec: PolicySpec, tests: Mapping[LoadMode, int]) -> dict[LoadMode, float]:
    delta = spec.risk.delta
    if spec.risk.split == "none":
        return dict.fromkeys(MODES, delta)
    if spec.risk.split == "segments_and_modes":
        return dict.fromkeys(MODES, delta / max(sum(tests.values()), 1))
    return {mode: delta / max(tests[mode], 1) for mode in MODES}


def _bound(
    spec: PolicySpec,
    certified: bool,
    epsilon: float,
    drop: float,
    counts: tuple[int, int],
    n: int,
    delta: float,
) -> float:
    # anytime: what is certified at every cycle is epsilon itself; ltt: the one-look
    # Clopper-Pearson bound of the loss (one-sided) or of loss minus gain rates (signed);
    # an uncertified anytime signed loss: a Hoeffding bound.
    losses, gains = counts
    if spec.risk.method == "anytime" and certified:
        return epsilon
    if spec.risk.loss == "one_sided":
        return clopper_pearson_upper(losses, n, delta)
    if spec.risk.method == "ltt":
        return float(signed_upper(np.array([losses]), np.array([gains]), n, delta)[0])
    return hoeffding_upper(drop, n, delta, width=2.0)


def _best_certified(curve: Curve, result: LttResult | None, last: int) -> int:
    # Every certified threshold is safe at once (the walk's guarantee covers the whole
    # certified set), so the one that saves the most is chosen. Without probe costs that
    # is the most aggressive (savings fall as the threshold rises); with them, a low
    # threshold that seldom stops may cost more in probes than it saves, and when
    # every certified threshold loses tokens the rule is off (1.0: no probes at all).
    if result is None or result.index is None:
        return last
    saving = curve.token_saving()
    best = result.index + int(np.argmax(saving[result.index :]))
    return last if saving[best] < 0 else best


def _decide(
    key: str,
    mode: LoadMode,
    spec: PolicySpec,
    curves: Mapping[str, Curve],
    population: str | None,
    result: LttResult | None,
    current: float,
) -> SegmentDecision:
    grid = spec.thresholds()
    last = len(grid) - 1
    curve = curves.get(population or key) or Curve.empty(grid)
    proposed = _best_certified(curve, result, last)
    final = limit_step(grid, proposed, current, spec.max_step)
    certified = result is not None and result.certified(final)
    guarantee: Guarantee = "none"
    if certified:
        guarantee = "segment" if population == key else "pooled"
    epsilon = spec.epsilon(key, mode)
    delta = result.delta if result is not None else spec.risk.delta
    signed = spec.risk.loss == "signed"
    oracle = empirical_oracle(curve, epsilon, signed=signed) if population is not None else None
    losses = int(curve.losses[final])
    drop = float((curve.signed_drop() if signed else curve.em_drop())[final])
    own = curves.get(key)
    return SegmentDecision(
        key=key,
        mode=mode,
        population=population,
        fell_back=population != key,
        guarantee=guarantee,
        epsilon=epsilon,
        delta=delta,
        samples=own.n if own is not None else 0,
        population_samples=curve.n,
        losses=losses,
        certified=certified,
        proposed=grid[proposed],
        threshold=grid[final],
        current=current,
        step_limited=final != proposed,
        token_saving=float(curve.token_saving()[final]),
        budget_saving=float(curve.budget_saving()[final]),
        em_drop=drop,
        em_drop_bound=_bound(
            spec, certified, epsilon, drop, (losses, int(curve.gains[final])), curve.n, delta
        ),
        full_em=curve.full_correct / max(curve.n, 1),
        p_values=tuple(zip(result.tested, result.p_values, strict=True)) if result else (),
        oracle_threshold=None if oracle is None else grid[oracle],
        oracle_saving=0.0 if oracle is None else float(curve.token_saving()[oracle]),
    )


def _with_schedule(
    spec: PolicySpec, decision: SegmentDecision, chain: Chain | None, current: float
) -> SegmentDecision:
    """The decision served by the population's schedule chain when it saves more.

    The chain's certified candidate that saves most replaces the plain threshold
    when its saving is larger and the step limit would not change it (the limit
    is measured on the threshold before the step, as for a plain one). Both
    certificates hold at once (their δ add up to the certificate's), so choosing
    the better one after the fact keeps the promise.
    """
    if chain is None or not decision.certified:
        return decision
    prefix = chain.deployable()
    if not prefix:
        return decision
    grid = chain.curve.grid
    saving = chain.curve.token_saving()
    best = max(prefix, key=lambda i: (saving[i], -i))
    if saving[best] <= decision.token_saving or grid[best] >= 1.0:
        return decision
    if limit_step(grid, best, current, spec.max_step) != best:
        return decision
    curve = chain.curve
    signed = spec.risk.loss == "signed"
    losses = int(curve.losses[best])
    drop = float((curve.signed_drop() if signed else curve.em_drop())[best])
    return decision.model_copy(
        update={
            "proposed": grid[best],
            "threshold": grid[best],
            "step_limited": False,
            "losses": losses,
            "delta": chain.state.delta,
            "token_saving": float(saving[best]),
            "budget_saving": float(curve.budget_saving()[best]),
            "em_drop": drop,
            "em_drop_bound": decision.epsilon,
            "p_values": tuple(
                (grid[i], float(chain.state.p_value[i]))
                for i in candidate_order(grid)[: len(prefix) + 1]
            ),
            "schedule": (chain.shape[0], after_step(grid[best], chain.shape)),
        }
    )


def _chain_curves(
    spec: PolicySpec, key: str, chain_of: Callable[[str, float], Chain | None] | None
) -> dict[float, Curve]:
    """The counts of ``key``'s own schedule chains, by epsilon (none without chains)."""
    out: dict[float, Curve] = {}
    if chain_of is None:
        return out
    for mode in MODES:
        epsilon = spec.epsilon(key, mode)
        chain = chain_of(key, epsilon)
        if chain is not None:
            out[epsilon] = chain.curve
    return out


def _anytime_population(
    key: str, book: CertificateBook, min_samples: int, epsilon: float
) -> str | None:
    # The most specific population that stands on its own: enough samples in its
    # epoch and a certified threshold at the key's epsilon (else the parent, whose
    # own certificate holds for the pool). Each certificate keeps its own promise.
    # A key whose own population restarted (drift) does not borrow a parent's
    # certificate, which holds its old behaviour: it stays safe until it certifies.
    ancestors = segment_ancestors(key)
    for candidate in ancestors:
        pop = book.populations.get(candidate)
        if candidate == key and pop is not None and pop.epoch > 1:
            return candidate if pop.curve.n >= min_samples else None
        if pop is not None and pop.curve.n >= min_samples:
            if pop.deployable(epsilon) or candidate == ancestors[-1]:
                return candidate
    for candidate in ancestors:  # nothing certified anywhere: the most specific with data
        pop = book.populations.get(candidate)
        if pop is not None and pop.curve.n >= min_samples:
            return candidate
    return None


def _anytime_result(book: CertificateBook, population: str, epsilon: float) -> LttResult:
    pop = book.populations[population]
    state = pop.states[epsilon]
    deployable = pop.deployable(epsilon)
    order = candidate_order(pop.curve.grid)
    tested = order[: len(deployable) + 1]
    return LttResult(
        index=deployable[-1] if deployable else None,
        tested=tuple(pop.curve.grid[i] for i in tested),
        p_values=tuple(float(state.p_value[i]) for i in tested),
        delta=state.delta,
    )


def optimize(
    spec: PolicySpec,
    samples: Mapping[str, ExplorationBatch | Curve],
    current: PolicyBody | None = None,
    book: CertificateBook | None = None,
) -> Proposal:
    """Propose the next policy from exploration samples.

    Args:
        spec: The validated policy spec.
        samples: Exploration samples (or, with ``ltt``, curves already on the
            spec's grid) by ``tenant/task/length_bucket`` key.
        current: The policy in force (the step limit is measured from it); the
            spec's safe default when None.
        book: With ``risk.method: anytime``, the certificates after
            :func:`~pipeline.optimizer.certify.advance` has fed them this cycle's
            samples (``samples`` is then ignored); None certifies ``samples``
            alone, as one look.

    Raises:
        OptimizerError: if a key is not a ``tenant/task/length_bucket`` key, a
            curve is on another grid, or ``anytime`` is given curves.
    """
    grid = spec.thresholds()
    current = current or spec.default_policy
    if spec.risk.method == "anytime":
        if book is None:
            batches = {k: v for k, v in samples.items() if isinstance(v, ExplorationBatch)}
            if len(batches) != len(samples):
                msg = "method 'anytime' needs exploration batches, not curves"
                raise OptimizerError(msg)
            book, _ = advance(CertificateBook.empty(spec), spec, batches, list(current.segments))
        return _optimize_anytime(spec, book, current)
    curves = _populations(spec, samples, grid)
    keys = _policy_keys(spec, samples, current)
    population = {key: _population(key, curves, spec.min_samples) for key in keys}
    plans: dict[LoadMode, set[tuple[str, float]]] = {
        mode: {(pop, spec.epsilon(k, mode)) for k in keys if (pop := population[k])}
        for mode in MODES
    }
    tests = {mode: len(plans[mode]) for mode in MODES}
    deltas = _deltas(spec, tests)
    results: dict[tuple[LoadMode, str, float], LttResult] = {}
    for mode, plan in plans.items():
        for pop, epsilon in plan:
            results[mode, pop, epsilon] = learn_then_test(
                curves[pop],
                epsilon,
                deltas[mode],
                spec.risk.p_value,
                signed=spec.risk.loss == "signed",
            )

    def result_of(mode: LoadMode, pop: str, epsilon: float) -> LttResult | None:
        return results[mode, pop, epsilon]

    return _assemble(spec, current, keys, population, curves, result_of, tests)


def _assemble(
    spec: PolicySpec,
    current: PolicyBody,
    keys: list[str],
    population: Mapping[str, str | None],
    curves: Mapping[str, Curve],
    result_of: Callable[[LoadMode, str, float], LttResult | None],
    tests: dict[LoadMode, int],
    chain_of: Callable[[str, float], Chain | None] | None = None,
) -> Proposal:
    """Decide every key and mode from its population's test result; build the proposal."""
    decisions: list[SegmentDecision] = []
    segments: dict[str, SegmentPolicy] = {}
    for key in keys:
        pop = population[key]
        thresholds: dict[LoadMode, float] = {}
        schedules: dict[LoadMode, tuple[tuple[int, float], ...]] = {}
        for mode in MODES:
            epsilon = spec.epsilon(key, mode)
            result = result_of(mode, pop, epsilon) if pop else None
            now = current_threshold(current, key, mode)
            decision = _decide(key, mode, spec, curves, pop, result, now)
            before = current_schedule(current, key, mode)
            if before is not None:
                decision = decision.model_copy(update={"current_schedule": before})
            if pop is not None and chain_of is not None:
                decision = _with_schedule(spec, decision, chain_of(pop, epsilon), now)
            decisions.append(decision)
            thresholds[mode] = decision.threshold
            if decision.schedule is not None:
                schedules[mode] = (decision.schedule,)
        settings = spec.settings_for(key)
        segments[key] = SegmentPolicy(
            thresholds=thresholds,
            schedules=schedules,
            min_tokens=settings.min_tokens,
            token_budget=settings.token_budget,
            exploration_share=exploration_for(
                spec, key, decisions[-len(MODES) :], curves, _chain_curves(spec, key, chain_of)
            ),
        )
    tested = sorted({pop for pop in population.values() if pop})
    pareto: dict[str, tuple[ParetoPoint, ...]] = {p: pareto_points(curves[p]) for p in tested}
    return Proposal(
        policy_name=spec.name,
        body=PolicyBody(segments=segments, exploration_share=spec.exploration_share),
        delta=spec.risk.delta,
        split=spec.risk.split,
        p_value=spec.risk.p_value,
        method=spec.risk.method,
        loss=spec.risk.loss,
        tests=tests,
        decisions=tuple(decisions),
        dropped=tuple(sorted(set(current.segments) - set(segments))),
        pareto=pareto,
    )


def _optimize_anytime(spec: PolicySpec, book: CertificateBook, current: PolicyBody) -> Proposal:
    curves = {key: pop.curve for key, pop in book.populations.items()}
    leaves = [k for k in book.populations if k.count("/") == 2]
    keys = _policy_keys(spec, leaves, current)
    population = {
        key: _anytime_population(key, book, spec.min_samples, spec.epsilon(key, "normal"))
        for key in keys
    }
    used = {
        mode: {(p, e) for k in keys if (p := population[k]) for e in [spec.epsilon(k, mode)]}
        for mode in MODES
    }

    def result_of(mode: LoadMode, pop: str, epsilon: float) -> LttResult | None:
        if epsilon not in book.populations[pop].states:
            return None
        return _anytime_result(book, pop, epsilon)

    def chain_of(pop: str, epsilon: float) -> Chain | None:
        found = book.populations.get(pop)
        return found.chains.get(epsilon) if found is not None else None

    tests = {mode: len(found) for mode, found in used.items()}
    return _assemble(spec, current, keys, population, curves, result_of, tests, chain_of)
