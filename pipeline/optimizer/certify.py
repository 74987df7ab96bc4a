"""Certificates that accumulate a population's exploration samples over cycles (pure).

A :class:`CertificateBook` holds, per population (a ``tenant/task/length``
key, a task or ``global``), the samples of its current *epoch*: the
cumulative counts per threshold (a :class:`Curve`, for savings and the
Pareto plot) and, per tolerance ε that some key tested on it needs, one
:class:`BettingState` over every threshold of the grid and two detectors on
the rule it serves: a :class:`HarmDetector` (mean loss above ε) and a
:class:`~pipeline.optimizer.shift.ShiftDetector` (losses rose against this
epoch's own rates, about three times quicker after a change). :func:`advance` feeds a
cycle's new samples to them, in an order that never depends on outcomes
(segment key, then the reader's request order), so the book can be saved
between cycles and the promise holds at every cycle at once:

    per population and ε, P(at any time a certified threshold has a mean
    loss above ε) <= the certificate's δ,

where δ is ``risk.delta`` per certificate (``split: none``) or
``risk.delta / risk.max_certificates`` (a family-wise promise over up to that
many certificates). Epoch 1 of a population spends ``δ / 2`` and epoch k >= 2
``δ / (2 (k - 1) k)`` (δ/4, δ/12, δ/24, ...), so restarts sum to δ; the first
restart, by far the most common, gets the larger share.

A restart happens when a detector fires: the watched rule's losses have
risen above ε or above this epoch's own rates (drift, or a new model that
behaves differently). Only that population restarts; the others keep their
evidence. The new epoch starts with the row after the alarm: an alarm is a
stopping time, so the rows after it are fresh draws of whatever holds then
(the rows that raised it are not reused). A model swap by itself
restarts nothing: the certificate stands while fresh samples stay consistent
with it, and the detector revokes it quickly when they do not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.optimizer.anytime import (
    BettingState,
    HarmDetector,
    IntArray,
    candidate_order,
    fixed_sequence,
)
from pipeline.optimizer.curve import (
    Curve,
    ExplorationBatch,
    Shape,
    evaluate,
    request_losses,
)
from pipeline.optimizer.errors import OptimizerError
from pipeline.optimizer.feed import interleave
from pipeline.optimizer.shift import ShiftDetector
from pipeline.optimizer.spec import Loss, PolicySpec
from schemas import GLOBAL_SEGMENT, LoadMode, PolicyBody, segment_ancestors

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
FORMAT = 1
"""Version of :meth:`CertificateBook.to_json`'s layout."""


@dataclass(frozen=True, slots=True, eq=False)
class Chain:
    """A one-step schedule's candidates at one ε, certified beside the plain thresholds.

    Candidate ``θ`` of the grid is the schedule ``θ`` before ``shape[0]`` tokens and
    ``after_step(θ, shape)`` from then on. The shape was chosen on the epoch's
    selection rows, which are never fed to ``state``; the chain sees the rows
    after them, so its e-processes start from wealth 1 on data the choice never saw.

    Attributes:
        shape: ``(from_tokens, lower_by)``.
        curve: Counts of the rows fed to the chain, per candidate.
        state: The chain's betting state (at the schedules' share of the certificate's δ).
    """

    shape: Shape
    curve: Curve
    state: BettingState

    def deployable(self) -> tuple[int, ...]:
        """Grid indices certified, safest first (the chain's walk prefix)."""
        return fixed_sequence(self.state.certified, candidate_order(self.curve.grid))


@dataclass(frozen=True, slots=True, eq=False)
class Population:
    """One population's current epoch.

    Attributes:
        key: The population key.
        epoch: 1 for the first; a restart starts the next.
        curve: Counts of this epoch's samples per threshold.
        states: Betting state per tolerance ε.
        detectors: Harm detector per tolerance ε (the boundary "mean loss above ε").
        shifts: Shift detector per tolerance ε (the watched rule's losses rose
            against this epoch's own rates: quicker after a change).
        restarts: Why each earlier epoch ended, oldest first (the last 10).
        trials: Schedules only: the epoch's selection rows counted under every
            candidate shape (they choose each chain's shape).
        trial_rows: How many selection rows ``trials`` holds.
        chains: Schedules only: the schedule chain per tolerance ε, once chosen.
    """

    key: str
    epoch: int
    curve: Curve
    states: dict[float, BettingState] = field(default_factory=dict)
    detectors: dict[float, HarmDetector] = field(default_factory=dict)
    shifts: dict[float, ShiftDetector] = field(default_factory=dict)
    restarts: tuple[str, ...] = ()
    trials: dict[Shape, Curve] = field(default_factory=dict)
    trial_rows: int = 0
    chains: dict[float, Chain] = field(default_factory=dict)

    def deployable(self, epsilon: float) -> tuple[int, ...]:
        """Grid indices certified at ``epsilon``, safest first (the walk's prefix)."""
        state = self.states.get(epsilon)
        if state is None:
            return ()
        return fixed_sequence(state.certified, candidate_order(self.curve.grid))


@dataclass(frozen=True, slots=True, eq=False)
class CertificateBook:
    """Every population's certificates; :func:`advance` returns the next book."""

    grid: tuple[float, ...]
    loss: Loss
    populations: dict[str, Population] = field(default_factory=dict)

    @classmethod
    def empty(cls, spec: PolicySpec) -> CertificateBook:
        """A book with no samples, for the spec's grid and loss."""
        return cls(spec.thresholds(), spec.risk.loss)

    def certificates(self) -> int:
        """How many (population, ε) certificates exist."""
        return sum(len(p.states) for p in self.populations.values())

    def to_json(self) -> dict[str, Any]:
        """The book as JSON-able values."""
        return {
            "format": FORMAT,
            "grid": list(self.grid),
            "loss": self.loss,
            "populations": {
                key: {
                    "epoch": p.epoch,
                    "curve": _curve_json(p.curve),
                    "states": [[eps, s.to_json()] for eps, s in sorted(p.states.items())],
                    "detectors": [
                        [eps, d.log_wealth, d.n, d.threshold, d.bet]
                        for eps, d in sorted(p.detectors.items())
                    ],
                    "shifts": [
                        [eps, d.log_wealth, d.n, d.threshold] for eps, d in sorted(p.shifts.items())
                    ],
                    "restarts": list(p.restarts),
                    "trial_rows": p.trial_rows,
                    "trials": [[t, c, _curve_json(v)] for (t, c), v in sorted(p.trials.items())],
                    "chains": [
                        [eps, ch.shape[0], ch.shape[1], _curve_json(ch.curve), ch.state.to_json()]
                        for eps, ch in sorted(p.chains.items())
                    ],
                }
                for key, p in sorted(self.populations.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CertificateBook:
        """Rebuild a book written by :meth:`to_json`.

        Raises:
            OptimizerError: if the data are not such a book.
        """
        try:
            if data["format"] != FORMAT:
                msg = f"certificate book format {data['format']}, expected {FORMAT}"
                raise OptimizerError(msg)
            grid = tuple(float(g) for g in data["grid"])
            populations = {
                str(key): Population(
                    key=str(key),
                    epoch=int(p["epoch"]),
                    curve=_curve_from_json(grid, p["curve"]),
                    states={float(e): BettingState.from_json(s) for e, s in p["states"]},
                    detectors={
                        float(e): HarmDetector(float(e), float(t), float(b), float(w), int(n))
                        for e, w, n, t, b in p["detectors"]
                    },
                    # Absent in books written before shift detectors: they start fresh.
                    shifts={
                        float(e): ShiftDetector(float(e), float(t), float(w), int(n))
                        for e, w, n, t in p.get("shifts", [])
                    },
                    restarts=tuple(str(r) for r in p["restarts"]),
                    # Absent in books written before schedules: selection starts now.
                    trial_rows=int(p.get("trial_rows", 0)),
                    trials={
                        (int(t), float(c)): _curve_from_json(grid, v)
                        for t, c, v in p.get("trials", [])
                    },
                    chains={
                        float(e): Chain(
                            (int(t), float(c)),
                            _curve_from_json(grid, v),
                            BettingState.from_json(st),
                        )
                        for e, t, c, v, st in p.get("chains", [])
                    },
                )
                for key, p in data["populations"].items()
            }
            loss = data["loss"]
            if loss not in ("signed", "one_sided"):
                raise ValueError(loss)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"invalid certificate book: {exc!r}"
            raise OptimizerError(msg) from None
        return cls(grid, loss, populations)


def _curve_json(curve: Curve) -> dict[str, Any]:
    return {
        "n": curve.n,
        "losses": curve.losses.tolist(),
        "gains": curve.gains.tolist(),
        "tokens_used": curve.tokens_used.tolist(),
        "full_tokens": curve.full_tokens,
        "budget_tokens": curve.budget_tokens,
        "full_correct": curve.full_correct,
    }


def _curve_from_json(grid: tuple[float, ...], data: Mapping[str, Any]) -> Curve:
    def ints(name: str) -> IntArray:
        values: IntArray = np.asarray(data[name], dtype=np.int64)
        if values.shape != (len(grid),):
            raise ValueError(name)
        return values

    return Curve(
        grid=grid,
        n=int(data["n"]),
        losses=ints("losses"),
        gains=ints("gains"),
        tokens_used=ints("tokens_used"),
        full_tokens=int(data["full_tokens"]),
        budget_tokens=int(data["budget_tokens"]),
        full_correct=int(data["full_correct"]),
    )


def population_members(spec: PolicySpec, leaves: list[str]) -> dict[str, list[str]]:
    """Each population of the spec's levels and the leaf keys it pools, sorted."""
    levels = spec.segments.levels
    members: dict[str, list[str]] = {GLOBAL_SEGMENT: sorted(leaves)}
    for leaf in sorted(leaves):
        if "segment" in levels:
            members[leaf] = [leaf]
        if "task" in levels:
            members.setdefault(leaf.split("/")[1], []).append(leaf)
    return members


def tolerances(spec: PolicySpec, population: str, keys: list[str]) -> list[float]:
    """The tolerances keys may test on ``population``: every ε of every key below it."""
    users = [k for k in keys if population in segment_ancestors(k)]
    return sorted({spec.epsilon(k, mode) for k in users for mode in MODES})


def certificate_delta(spec: PolicySpec, epoch: int) -> float:
    """The level of one certificate in ``epoch`` (epochs of a population sum to its δ)."""
    base = spec.risk.delta
    if spec.risk.split != "none":
        base /= spec.risk.max_certificates
    if epoch == 1:
        return base / 2
    return base / (2 * (epoch - 1) * epoch)


def _plain_delta(spec: PolicySpec, epoch: int) -> float:
    """The plain thresholds' level: the certificate's, less what schedules take."""
    share = spec.schedules.share if spec.schedules.shapes() else 0.0
    return certificate_delta(spec, epoch) * (1.0 - share)


def _fresh(spec: PolicySpec, key: str, epoch: int, epsilons: list[float]) -> Population:
    grid = spec.thresholds()
    lower = -1.0 if spec.risk.loss == "signed" else 0.0
    delta = _plain_delta(spec, epoch)
    return Population(
        key=key,
        epoch=epoch,
        curve=Curve.empty(grid),
        states={
            e: BettingState.start(len(grid), epsilon=e, delta=delta, lower=lower) for e in epsilons
        },
        detectors={e: HarmDetector(epsilon=e) for e in epsilons},
        shifts={e: ShiftDetector(epsilon=e) for e in epsilons},
    )


def _watch(
    pop: Population,
    losses: np.ndarray[Any, Any],
    served: Mapping[float, tuple[int, Shape | None]],
    shaped: Callable[[Shape], np.ndarray[Any, Any]],
) -> tuple[int | None, str, Population]:
    """Run every detector on the losses of its rule: earliest alarm, why, updated population.

    The alarm is the 0-based row of ``losses`` (this cycle's block) that raised it.

    A segment's detectors watch the threshold it is served with now (``served``,
    by epsilon), wherever it was certified, so a segment that drifts inside a pool
    is caught on its own samples; otherwise the most aggressive certified one.
    The shift detector judges them against this epoch's counts at that
    threshold before this cycle's samples. A segment served a schedule is
    watched on that schedule's losses (``shaped``: this block's rows under a
    shape), judged against its chain's counts when the chain has that shape.
    """
    at: int | None = None
    why = ""
    detectors, shifts = dict(pop.detectors), dict(pop.shifts)
    curve = pop.curve
    for eps, detector in pop.detectors.items():
        prefix = pop.deployable(eps)
        shape: Shape | None = None
        if eps in served:
            watched, shape = served[eps]
        elif prefix:
            watched = prefix[-1]
        else:
            continue
        theta = curve.grid[watched]
        column = losses[:, watched]
        reference = (int(curve.losses[watched]), int(curve.gains[watched]), curve.n)
        if shape is not None:
            column = shaped(shape)[:, watched]
            chain = pop.chains.get(eps)
            same = chain is not None and chain.shape[0] == shape[0]
            if chain is not None and same and abs(chain.shape[1] - shape[1]) < 1e-6:
                ref = chain.curve
                reference = (int(ref.losses[watched]), int(ref.gains[watched]), ref.n)
            else:
                reference = (0, 0, 0)  # no counts of this rule: the harm detector alone
        detectors[eps], alarm = detector.update(column)
        shift = shifts.get(eps) or ShiftDetector(epsilon=eps)
        shifts[eps], shifted = shift.update(column, reference)
        # Detectors count alarms from their own first sample; make them rows of this block.
        alarm = None if alarm is None else alarm - detector.n - 1
        shifted = None if shifted is None else shifted - shift.n - 1
        if alarm is not None and (at is None or alarm < at):
            at = alarm
            why = f"losses at threshold {theta} rose above epsilon {eps}"
        if shifted is not None and (at is None or shifted < at):
            at = shifted
            why = (
                f"losses at threshold {theta} rose above this epoch's rate "
                f"({reference[0]} in {reference[2]}) toward epsilon {eps}"
            )
    return at, why, replace(pop, detectors=detectors, shifts=shifts)


def advance(
    book: CertificateBook,
    spec: PolicySpec,
    samples: Mapping[str, ExplorationBatch],
    known: list[str] | None = None,
    current: PolicyBody | None = None,
) -> tuple[CertificateBook, list[str]]:
    """Feed a cycle's new samples (by ``tenant/task/length`` key) to the certificates.

    Args:
        book: The certificates so far (:meth:`CertificateBook.empty` at first).
        spec: The policy spec (grid, loss, tolerances, δ).
        samples: New exploration samples since the last call, each batch in
            request order; never samples already fed.
        known: Policy keys that exist beside the sampled ones (the current
            policy's), so their tolerances get certificates too.
        current: The policy in force: a segment's detectors watch the threshold
            it is served with (None: the certified one).

    Returns:
        The next book and one line per event (a restart, a refused certificate).

    Raises:
        OptimizerError: if a key is not ``tenant/task/length``.
    """
    events: list[str] = []
    grid = spec.thresholds()
    if book.grid != grid or book.loss != spec.risk.loss:
        if book.populations:
            events.append("the spec's grid or loss changed: every certificate restarts")
        book = CertificateBook.empty(spec)
    leaves = sorted(set(samples) | {k for k in book.populations if k.count("/") == 2})
    if any(k.count("/") != 2 for k in samples):
        msg = f"samples must be keyed by 'tenant/task/length_bucket', got {sorted(samples)}"
        raise OptimizerError(msg)
    keys = sorted(set(leaves) | set(known or ()) | {k.split("/")[1] for k in leaves})
    losses: dict[str, np.ndarray[Any, Any]] = {}
    curves: dict[str, Curve] = {}
    for leaf, batch in samples.items():
        settings = spec.settings_for(leaf)
        one_sided = spec.risk.loss == "one_sided"
        losses[leaf] = request_losses(batch, grid, settings.min_tokens, one_sided=one_sided)
        curves[leaf] = evaluate(batch, grid, settings.min_tokens, settings.token_budget)
    populations = dict(book.populations)
    for key, members in population_members(spec, leaves).items():
        fed = [m for m in members if m in losses and len(losses[m])]
        wanted = tolerances(spec, key, keys)
        pop = populations.get(key) or _fresh(spec, key, 1, [])
        missing = [e for e in wanted if e not in pop.states]
        if missing and pop.curve.n == 0:
            pop = _fresh(spec, key, pop.epoch, sorted(set(pop.states) | set(missing)))
        elif missing:
            # A new tolerance on a population with history: its certificate starts now.
            extra = _fresh(spec, key, pop.epoch, missing)
            pop = replace(
                pop,
                states={**pop.states, **extra.states},
                detectors={**pop.detectors, **extra.detectors},
                shifts={**pop.shifts, **extra.shifts},
            )
        if not fed:
            populations[key] = pop
            continue
        block, order = interleave(
            key, [losses[m] for m in fed], [samples[m] for m in fed], pop.curve.n
        )
        members_of = {m: samples[m] for m in fed}
        shaped = _shaper(spec, members_of)
        curve = sum((curves[m] for m in fed), Curve.empty(grid))
        at, why, watched = _watch(pop, block, _served(spec, key, current), _in_order(shaped, order))
        if at is None:
            states = {e: st.update(block) for e, st in pop.states.items()}
            grown = replace(watched, curve=pop.curve + curve, states=states)
            populations[key] = _feed_schedules(spec, grown, members_of, order, shaped)
            continue
        events.append(f"{key}: epoch {pop.epoch} ends after {at + 1} new samples: {why}")
        restarted = _fresh(spec, key, pop.epoch + 1, sorted(pop.states))
        if at + 1 < len(block):
            # The new epoch starts with the row after the alarm. The alarm is a stopping
            # time, so the rows after it are fresh draws of whatever regime holds then,
            # whatever the detectors saw; the rows that raised it are never reused.
            restarted = replace(
                restarted,
                curve=_rows_curve(spec, members_of, order[at + 1 :]),
                states={e: st.update(block[at + 1 :]) for e, st in restarted.states.items()},
            )
            restarted = _feed_schedules(spec, restarted, members_of, order[at + 1 :], shaped)
        populations[key] = replace(restarted, restarts=(*pop.restarts, why)[-10:])
    book = replace(book, populations=populations)
    if spec.risk.split != "none" and book.certificates() > spec.risk.max_certificates:
        events.append(
            f"{book.certificates()} certificates exceed risk.max_certificates "
            f"{spec.risk.max_certificates}: the family-wise promise no longer holds"
        )
    return book, events


def _shaper(
    spec: PolicySpec, batches: Mapping[str, ExplorationBatch]
) -> Callable[[Shape], np.ndarray[Any, Any]]:
    """Losses of ``batches`` stacked in key order, under a schedule shape (memoised)."""
    memo: dict[Shape, np.ndarray[Any, Any]] = {}
    grid = spec.thresholds()
    one_sided = spec.risk.loss == "one_sided"

    def shaped(shape: Shape) -> np.ndarray[Any, Any]:
        if shape not in memo:
            memo[shape] = np.vstack(
                [
                    request_losses(
                        batch,
                        grid,
                        spec.settings_for(leaf).min_tokens,
                        one_sided=one_sided,
                        shape=shape,
                    )
                    for leaf, batch in batches.items()
                ]
            )
        return memo[shape]

    return shaped


def _in_order(
    shaped: Callable[[Shape], np.ndarray[Any, Any]], order: np.ndarray[Any, Any]
) -> Callable[[Shape], np.ndarray[Any, Any]]:
    """``shaped``'s rows in feed order (the block's)."""
    return lambda shape: shaped(shape)[order]


def _rows_curve(
    spec: PolicySpec,
    batches: Mapping[str, ExplorationBatch],
    rows: IntArray,
    shape: Shape | None = None,
) -> Curve:
    """The curve of some rows of ``batches`` (by segment key) stacked in their order.

    ``rows`` index the stacked rows, as :func:`~pipeline.optimizer.feed.interleave`'s order does.
    """
    grid = spec.thresholds()
    curve = Curve.empty(grid)
    start = 0
    for leaf, batch in batches.items():
        mine = rows[(rows >= start) & (rows < start + len(batch))] - start
        start += len(batch)
        if len(mine):
            settings = spec.settings_for(leaf)
            part = evaluate(
                batch.take(mine), grid, settings.min_tokens, settings.token_budget, shape
            )
            curve = curve + part
    return curve


def _choose(spec: PolicySpec, trials: Mapping[Shape, Curve], epsilon: float) -> Shape:
    """The shape whose best candidate within ``epsilon`` saves most on the selection rows.

    Ties (and no candidate within ``epsilon`` anywhere) go to the first shape.
    """
    signed = spec.risk.loss == "signed"
    best: tuple[float, Shape] | None = None
    for shape, curve in trials.items():
        drop = curve.signed_drop() if signed else curve.em_drop()
        saving = curve.token_saving()
        within = saving[drop <= epsilon]
        value = float(within.max()) if within.size else 0.0
        if best is None or value > best[0]:
            best = (value, shape)
    return best[1] if best is not None else spec.schedules.shapes()[0]


Shaped = Callable[[Shape], "np.ndarray[Any, Any]"]
"""Losses of a population's stacked rows (this cycle) under a schedule shape."""


def _feed_schedules(
    spec: PolicySpec,
    pop: Population,
    batches: Mapping[str, ExplorationBatch],
    rows: IntArray,
    shaped: Shaped,
) -> Population:
    """Feed stacked ``rows`` (in feed order) to the epoch's shape selection, then its chains.

    The first ``selection_samples`` rows of an epoch are counted under every
    candidate shape; once there are that many, each tolerance gets a chain of
    the shape they favour, fed only the rows after them.
    """
    shapes = spec.schedules.shapes()
    if not shapes or len(rows) == 0:
        return pop
    grid = spec.thresholds()
    need = max(spec.schedules.selection_samples - pop.trial_rows, 0)
    pick, rest = rows[:need], rows[need:]
    trials, chains = dict(pop.trials), dict(pop.chains)
    if len(pick):
        for shape in shapes:
            trials[shape] = trials.get(shape, Curve.empty(grid)) + _rows_curve(
                spec, batches, pick, shape
            )
    trial_rows = pop.trial_rows + len(pick)
    if trial_rows >= spec.schedules.selection_samples:
        lower = -1.0 if spec.risk.loss == "signed" else 0.0
        delta = certificate_delta(spec, pop.epoch) * spec.schedules.share
        for eps in pop.states:
            if eps not in chains:
                state = BettingState.start(len(grid), epsilon=eps, delta=delta, lower=lower)
                chains[eps] = Chain(_choose(spec, trials, eps), Curve.empty(grid), state)
        if len(rest):
            for eps, chain in chains.items():
                chains[eps] = Chain(
                    chain.shape,
                    chain.curve + _rows_curve(spec, batches, rest, chain.shape),
                    chain.state.update(shaped(chain.shape)[rest]),
                )
    return replace(pop, trials=trials, trial_rows=trial_rows, chains=chains)


def _served(
    spec: PolicySpec, key: str, current: PolicyBody | None
) -> dict[float, tuple[int, Shape | None]]:
    """The rule ``key`` (a segment) is served with, by epsilon: grid index and schedule shape.

    {} if none; the shape is None for a plain threshold.
    """
    if current is None or key.count("/") != 2:
        return {}
    grid = spec.thresholds()
    served: dict[float, tuple[int, Shape | None]] = {}
    for mode in MODES:
        policy = next(
            (current.segments[k] for k in segment_ancestors(key) if k in current.segments), None
        )
        if policy is None:
            continue
        theta = policy.thresholds.get(mode, policy.thresholds["normal"])
        steps = policy.schedules.get(mode, policy.schedule)
        shape: Shape | None = None
        if len(steps) == 1:
            start, after = steps[0]
            shape = (start, round(theta - after, 6))
        elif steps:
            continue  # a schedule of several steps is no rule of the grid: nothing to watch
        if theta < 1.0 and theta in grid:
            served.setdefault(spec.epsilon(key, mode), (grid.index(theta), shape))
    return served
