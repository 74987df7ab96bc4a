"""Exploration samples, and what every threshold of a grid would have done to them.

An exploration request ran to its natural end and recorded, at each
checkpoint, the tokens so far, the confidence and whether the trial answer
was right. Under threshold θ a node stops at the first checkpoint with
``tokens >= min_tokens`` and ``confidence >= θ`` (the rule of
:func:`pipeline.node.decision.decide`); a checkpoint at the end of the
generation is the end, not an early stop, so its answer is the full one.
A threshold of 1.0 (or more) is off: it never stops early, whatever the
confidence, on the node (:class:`pipeline.node.decision.Rule`) and here.

Two losses per request: the signed loss ``EM_full - EM_early`` in {-1, 0, 1},
whose mean is the EM drop the operator measures (an early answer that fixes a
wrong full answer counts in favour), and the one-sided loss
``1[full right and early wrong]``, an upper bound on it. :class:`Curve` counts
both (``losses`` and ``gains``) per threshold; :func:`request_losses` gives
them per request, in order, for the anytime certificates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.optimizer.errors import OptimizerError
from schemas import Outcome

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Shape = tuple[int, float]
"""A one-step schedule's shape ``(from_tokens, lower_by)``: candidate ``θ`` of a grid
means threshold ``θ`` before ``from_tokens`` tokens and ``θ - lower_by`` from then on
(the policy's schedule step ``(from_tokens, θ - lower_by)``). ``θ = 1.0`` stays off."""


def after_step(theta: float, shape: Shape) -> float:
    """The threshold candidate ``theta`` of ``shape`` applies from the step on (never below 0)."""
    return max(round(theta - shape[1], 6), 0.0)


@dataclass(frozen=True, slots=True)
class Trajectory:
    """One exploration request.

    Attributes:
        tokens: Tokens at each checkpoint, strictly increasing.
        confidence: Confidence at each checkpoint, in [0, 1].
        correct: Whether the trial answer at each checkpoint was right.
        full_correct: Whether the answer of the full generation was right.
        full_tokens: Tokens of the full generation (at least the last checkpoint's).
        probe_tokens: Tokens one confidence probe costs (0 when confidence is free).
    """

    tokens: tuple[int, ...]
    confidence: tuple[float, ...]
    correct: tuple[bool, ...]
    full_correct: bool
    full_tokens: int
    probe_tokens: int = 0


def trajectory_from_outcome(outcome: Outcome) -> Trajectory | None:
    """The trajectory of a labeled exploration outcome; None for any other outcome."""
    event = outcome.event
    if not event.exploration or event.trajectory is None:
        return None
    if outcome.em is None or outcome.checkpoint_em is None:
        return None
    return Trajectory(
        tokens=tuple(point.tokens for point in event.trajectory),
        confidence=tuple(point.confidence for point in event.trajectory),
        correct=outcome.checkpoint_em,
        # An exploration request ran to its end, so its final answer is the full one.
        full_correct=outcome.em,
        full_tokens=event.tokens_generated,
        probe_tokens=probe_cost(event.tokens_probe, len(event.trajectory)),
    )


def probe_cost(tokens_probe: int, checkpoints: int) -> int:
    """Tokens one probe cost on an exploration request that probed every checkpoint."""
    return round(tokens_probe / checkpoints) if checkpoints else 0


def _frozen(array: npt.NDArray[np.generic]) -> None:
    array.flags.writeable = False


@dataclass(frozen=True, slots=True, eq=False)
class ExplorationBatch:
    """Trajectories of one segment as padded arrays (row = request, column = checkpoint).

    Columns at or beyond ``length[row]`` are padding and never read. Build
    from objects with :meth:`from_trajectories`; generators may fill the
    arrays directly, which is how tests draw thousands of samples quickly.

    Raises:
        OptimizerError: if shapes disagree, a confidence leaves [0, 1], token
            counts do not strictly increase or pass ``full_tokens``.
    """

    tokens: IntArray
    confidence: FloatArray
    correct: BoolArray
    length: IntArray
    full_tokens: IntArray
    full_correct: BoolArray
    arrival: FloatArray | None = None
    """Request time of each row (seconds, any origin), when known: pooled populations
    interleave their segments' rows in this order (see ``pipeline.optimizer.certify``)."""
    probe_tokens: IntArray | None = None
    """Tokens one confidence probe costs, per row (None: confidence is free). A rule that
    can stop early probes every checkpoint from ``min_tokens`` on until it stops, so
    :func:`evaluate` charges that cost to every threshold below 1.0."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            msg = f"invalid exploration batch: {problem}"
            raise OptimizerError(msg)
        for array in (
            self.tokens,
            self.confidence,
            self.correct,
            self.length,
            self.full_tokens,
            self.full_correct,
        ):
            _frozen(array)
        if self.probe_tokens is not None:
            _frozen(self.probe_tokens)

    def _problem(self) -> str | None:
        n, k = self.tokens.shape if self.tokens.ndim == 2 else (-1, -1)
        if n < 0 or self.confidence.shape != (n, k) or self.correct.shape != (n, k):
            return "tokens, confidence and correct must be 2-D arrays of one shape"
        if self.arrival is not None and self.arrival.shape != (n,):
            return "arrival needs one entry per row"
        if self.probe_tokens is not None and (
            self.probe_tokens.shape != (n,) or (n and self.probe_tokens.min() < 0)
        ):
            return "probe_tokens needs one non-negative entry per row"
        if any(a.shape != (n,) for a in (self.length, self.full_tokens, self.full_correct)):
            return "length, full_tokens and full_correct need one entry per row"
        if n and (self.length.min() < 0 or self.length.max() > k):
            return "length must lie between 0 and the number of columns"
        valid = self.valid
        conf = self.confidence[valid]
        if not np.all((conf >= 0.0) & (conf <= 1.0)):
            return "confidence must be finite and within [0, 1]"
        steps = np.diff(self.tokens, axis=1) > 0
        if not np.all(steps | ~valid[:, 1:]):
            return "checkpoint token counts must strictly increase"
        if np.any(valid & (self.tokens > self.full_tokens[:, None])):
            return "a checkpoint lies beyond full_tokens"
        if n and self.full_tokens.min() < 0:
            return "full_tokens must be non-negative"
        return None

    @property
    def valid(self) -> BoolArray:
        """Mask of the real (not padding) checkpoints."""
        columns = np.arange(self.tokens.shape[1])
        mask: BoolArray = columns[None, :] < self.length[:, None]
        return mask

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def take(self, rows: npt.ArrayLike) -> ExplorationBatch:
        """The batch of the given rows (indices into this one), in that order."""
        index = np.asarray(rows, dtype=np.int64)
        return ExplorationBatch(
            tokens=self.tokens[index],
            confidence=self.confidence[index],
            correct=self.correct[index],
            length=self.length[index],
            full_tokens=self.full_tokens[index],
            full_correct=self.full_correct[index],
            arrival=None if self.arrival is None else self.arrival[index],
            probe_tokens=None if self.probe_tokens is None else self.probe_tokens[index],
        )

    @classmethod
    def from_trajectories(cls, trajectories: Iterable[Trajectory]) -> ExplorationBatch:
        """Pack trajectories into arrays.

        Raises:
            OptimizerError: if a trajectory's sequences differ in length.
        """
        rows = list(trajectories)
        k = max((len(t.tokens) for t in rows), default=0)
        probes = np.array([t.probe_tokens for t in rows], dtype=np.int64)
        n = len(rows)
        tokens = np.zeros((n, k), dtype=np.int64)
        confidence = np.zeros((n, k), dtype=np.float64)
        correct = np.zeros((n, k), dtype=np.bool_)
        length = np.zeros(n, dtype=np.int64)
        for i, row in enumerate(rows):
            m = len(row.tokens)
            if len(row.confidence) != m or len(row.correct) != m:
                msg = f"trajectory {i}: tokens, confidence and correct differ in length"
                raise OptimizerError(msg)
            tokens[i, :m] = row.tokens
            confidence[i, :m] = row.confidence
            correct[i, :m] = row.correct
            length[i] = m
        return cls(
            tokens=tokens,
            confidence=confidence,
            correct=correct,
            length=length,
            full_tokens=np.array([t.full_tokens for t in rows], dtype=np.int64),
            full_correct=np.array([t.full_correct for t in rows], dtype=np.bool_),
            probe_tokens=probes if probes.any() else None,
        )


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """Return ``grid`` as a tuple after checking it is non-empty, increasing and within [0, 1].

    Raises:
        OptimizerError: if it is not.
    """
    values = tuple(float(g) for g in grid)
    if not values or any(not 0.0 <= g <= 1.0 for g in values):
        msg = "the threshold grid must be non-empty and within [0, 1]"
        raise OptimizerError(msg)
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        msg = "the threshold grid must be strictly increasing"
        raise OptimizerError(msg)
    return values


@dataclass(frozen=True, slots=True, eq=False)
class Curve:
    """Counts per grid threshold on one population; curves of disjoint populations add up.

    Attributes:
        grid: Thresholds, increasing.
        n: Requests.
        losses: Per threshold, requests whose full answer was right and early answer wrong.
        gains: Per threshold, requests whose full answer was wrong and early answer right.
        tokens_used: Per threshold, tokens spent in total: generated, plus the confidence
            probes a rule that can stop early runs (none at 1.0, which never probes).
        full_tokens: Tokens of the full generations in total.
        budget_tokens: Sum of the token budgets.
        full_correct: Requests whose full answer was right.
    """

    grid: tuple[float, ...]
    n: int
    losses: IntArray
    gains: IntArray
    tokens_used: IntArray
    full_tokens: int
    budget_tokens: int
    full_correct: int

    def __post_init__(self) -> None:
        for array in (self.losses, self.gains, self.tokens_used):
            _frozen(array)

    @classmethod
    def empty(cls, grid: Sequence[float]) -> Curve:
        """The curve of no requests (the neutral element of ``+``)."""
        values = check_grid(grid)
        zeros = np.zeros(len(values), dtype=np.int64)
        return cls(values, 0, zeros, zeros, zeros, 0, 0, 0)

    def __add__(self, other: Curve) -> Curve:
        if self.grid != other.grid:
            msg = "curves on different grids cannot be pooled"
            raise OptimizerError(msg)
        return Curve(
            grid=self.grid,
            n=self.n + other.n,
            losses=self.losses + other.losses,
            gains=self.gains + other.gains,
            tokens_used=self.tokens_used + other.tokens_used,
            full_tokens=self.full_tokens + other.full_tokens,
            budget_tokens=self.budget_tokens + other.budget_tokens,
            full_correct=self.full_correct + other.full_correct,
        )

    def em_drop(self) -> FloatArray:
        """Empirical loss (EM-drop bound) per threshold; zeros when empty."""
        return self.losses / max(self.n, 1)

    def signed_drop(self) -> FloatArray:
        """Empirical mean signed loss (EM_full - EM_early) per threshold; zeros when empty."""
        drop: FloatArray = (self.losses - self.gains) / max(self.n, 1)
        return drop

    def token_saving(self) -> FloatArray:
        """Share of the full generations' tokens saved, per threshold."""
        return 1.0 - self.tokens_used / max(self.full_tokens, 1)

    def budget_saving(self) -> FloatArray:
        """Tokens saved as a share of the token budget, per threshold."""
        return (self.full_tokens - self.tokens_used) / max(self.budget_tokens, 1)


def evaluate(
    batch: ExplorationBatch,
    grid: Sequence[float],
    min_tokens: int,
    token_budget: int,
    shape: Shape | None = None,
) -> Curve:
    """What each threshold of ``grid`` does to ``batch`` under ``min_tokens``.

    Args:
        batch: The segment's exploration samples.
        grid: Thresholds, increasing, within [0, 1].
        min_tokens: No early stop before this many tokens.
        token_budget: The segment's budget (only scales :meth:`Curve.budget_saving`).
        shape: With a one-step schedule's shape, each ``θ`` is that schedule (:data:`Shape`).
    """
    values = check_grid(grid)
    n = len(batch)
    if n == 0:
        return Curve.empty(values)
    points = stop_points(batch, values, min_tokens, shape)
    stops = points >= 0
    rows = np.arange(n)[:, None]
    first = np.maximum(points, 0)
    full_right = batch.full_correct[:, None]
    if batch.tokens.shape[1]:
        early_right = np.where(stops, batch.correct[rows, first], full_right)
        spent = np.where(stops, batch.tokens[rows, first], batch.full_tokens[:, None]).sum(axis=0)
    else:
        early_right = np.broadcast_to(full_right, points.shape)
        spent = np.full(len(values), batch.full_tokens.sum(), dtype=np.int64)
    probes = _probes_so_far(batch, min_tokens)
    if probes is not None:
        charged = np.where(stops, probes[rows, first], probes[:, -1][:, None]).sum(axis=0)
        spent = spent + np.where(np.asarray(values) < 1.0, charged, 0)
    losses = np.count_nonzero(full_right & ~early_right, axis=0)
    gains = np.count_nonzero(~full_right & early_right, axis=0)
    return Curve(
        grid=values,
        n=n,
        losses=losses.astype(np.int64),
        gains=gains.astype(np.int64),
        tokens_used=np.asarray(spent, dtype=np.int64),
        full_tokens=int(batch.full_tokens.sum()),
        budget_tokens=n * token_budget,
        full_correct=int(np.count_nonzero(full_right)),
    )


def _probes_so_far(batch: ExplorationBatch, min_tokens: int) -> IntArray | None:
    """Probe tokens spent up to each checkpoint (inclusive) by a rule that can stop early."""
    if batch.probe_tokens is None or not batch.probe_tokens.any() or batch.tokens.shape[1] == 0:
        return None
    probed = batch.valid & (batch.tokens >= min_tokens)
    spent: IntArray = np.cumsum(probed, axis=1) * batch.probe_tokens[:, None]
    return spent


def stop_points(
    batch: ExplorationBatch, grid: Sequence[float], min_tokens: int, shape: Shape | None = None
) -> IntArray:
    """Per request (rows) and threshold (columns): the checkpoint it stops at, or -1.

    The node's rule: the first checkpoint with ``tokens >= min_tokens``, before
    the end of the generation, with ``confidence >= threshold``; a threshold of
    1.0 or more never stops. With ``shape``, each threshold is that one-step schedule.
    """
    values = np.asarray(check_grid(grid), dtype=np.float64)
    n, columns = batch.tokens.shape
    eligible = (
        batch.valid & (batch.tokens >= min_tokens) & (batch.tokens < batch.full_tokens[:, None])
    )
    # Bars rise with the candidate at every checkpoint, so the candidates a
    # checkpoint's confidence clears are a prefix of the grid: count them (the
    # comparisons are the rule's own, ``confidence >= bar``), never past the
    # last candidate below 1.0.
    live = int(np.count_nonzero(values < 1.0))
    cleared = np.searchsorted(values, batch.confidence, side="right")
    if shape is not None:
        after = np.array([after_step(float(t), shape) for t in values], dtype=np.float64)
        later = np.searchsorted(after, batch.confidence, side="right")
        cleared = np.where(batch.tokens >= shape[0], later, cleared)
    reach = np.where(eligible, np.minimum(cleared, live), 0)
    # Candidate j stops at the first checkpoint whose running reach passes j:
    # the number of checkpoints whose running reach is at most j (it never falls).
    running = np.maximum.accumulate(reach, axis=1)
    width = len(values) + 1
    counts = np.bincount(
        (np.arange(n)[:, None] * width + running).ravel(), minlength=n * width
    ).reshape(n, width)
    first = np.cumsum(counts, axis=1)[:, : len(values)]
    points: IntArray = np.where(first < columns, first, -1).astype(np.int64)
    return points


def request_losses(
    batch: ExplorationBatch,
    grid: Sequence[float],
    min_tokens: int,
    *,
    one_sided: bool = False,
    shape: Shape | None = None,
) -> npt.NDArray[np.int8]:
    """Loss of every request (rows, in batch order) under every threshold (columns).

    Signed: ``EM_full - EM_early`` in {-1, 0, 1}; ``one_sided``:
    ``1[full right and early wrong]`` in {0, 1}. A request that does not stop
    early under a threshold has loss 0 there.
    """
    points = stop_points(batch, grid, min_tokens, shape)
    rows = np.arange(len(batch))[:, None]
    early = np.where(
        points >= 0, batch.correct[rows, np.maximum(points, 0)], batch.full_correct[:, None]
    )
    loss = batch.full_correct[:, None].astype(np.int8) - early.astype(np.int8)
    out: npt.NDArray[np.int8] = np.maximum(loss, 0) if one_sided else loss
    return out
