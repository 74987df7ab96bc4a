"""Anytime-valid certificates that a stop rule's mean EM drop is at most ε.

For each candidate rule the null is H0: E[d] > ε, where d is a per-request
loss in ``[lower, 1]``: the signed loss ``EM_full - EM_early`` in {-1, 0, 1}
(an early answer that fixes a wrong full one counts in favour), or the
one-sided loss ``1[full right and early wrong]`` in {0, 1}. With
``x = ε - d`` the wealth ``K_t = prod_{i<=t} (1 + λ_i x_i)``, whose bet
``λ_i`` in ``[0, cap / (1 - ε)]`` uses ``x_1 .. x_{i-1}`` only (aGRAPA:
``λ = Σx / (Σx² + prior)``), is a nonnegative supermartingale under H0
(Waudby-Smith and Ramdas, 2023). The wealth that is tested is the average
of such processes over a few caps (a hedge: an average of nonnegative
supermartingales that start at 1 is one too). By Ville's inequality it
*ever* reaches ``1/δ`` with probability at most δ, however often it is
looked at: a candidate is certified from its first crossing on (latched).

Why hedge: while a candidate sees no loss its wealth grows by a fixed
``log(1 + cap ε / (1 - ε))`` per sample, so its first certification comes at
an almost fixed sample count that only the cap sets; a large cap gets there
about a third sooner, a small one loses less on each loss. The average pays
at most ``log(len(caps))`` against the better of its members (docs/adr-012).

:func:`fixed_sequence` walks the candidates from the safest toward the most
aggressive and stops at the first one not certified. A true null is deployed
at some time only if the first true null in that fixed order is ever
certified, so P(ever deploying a rule with E[d] > ε) <= δ, with no split of δ
over the candidates. The order is fixed before the data; a non-monotone risk
curve only costs power.

Samples must be fed in an order that does not depend on their outcomes; the
state only grows (:meth:`BettingState.update`), and any split of one stream
into batches gives the same state, so a controller can persist it between
cycles (:meth:`BettingState.to_json`).

:class:`HarmDetector` is the other direction, for change detection: an
e-detector (CUSUM-like: its wealth restarts at 1 whenever it falls below 1)
for "E[d] has risen above ε" on the losses of the deployed rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.optimizer.errors import OptimizerError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_CAPS = (0.5, 0.9)
"""Shares of the largest bet that keeps wealth positive, one process each, averaged.
0.9 alone certifies a loss-free rule a third sooner but loses most of its wealth
on one loss; 0.5 alone is slow on loss-free stretches (docs/adr-008, adr-012)."""
DEFAULT_PRIOR = 1.0
"""Pseudo second moment of the aGRAPA bet: larger means smaller early bets."""


@dataclass(frozen=True, slots=True, eq=False)
class BettingState:
    """Running e-processes of ``m`` candidates; :meth:`update` returns the next state.

    Attributes:
        epsilon: Tolerated mean loss.
        delta: Level: a candidate is certified once its wealth reaches ``1/delta``.
        lower: Smallest possible loss (-1 signed, 0 one-sided); the largest is 1.
        n: Samples seen by every candidate.
        sum_x: Per candidate, sum of ``x = epsilon - d``.
        sum_x2: Per candidate, sum of ``x^2``.
        sum_d: Per candidate, sum of the losses (for the empirical mean).
        components: Log wealth of each cap's process (rows) per candidate (columns).
        max_log_wealth: Largest log wealth (of the average) each candidate has had.
        crossed_at: Samples seen when the wealth first reached ``1/delta``; -1 if never.
        caps: One process per cap; the tested wealth is their average.
        prior: Pseudo second moment of the bets.
    """

    epsilon: float
    delta: float
    lower: float
    n: int
    sum_x: FloatArray
    sum_x2: FloatArray
    sum_d: FloatArray
    components: FloatArray
    max_log_wealth: FloatArray
    crossed_at: IntArray
    caps: tuple[float, ...] = DEFAULT_CAPS
    prior: float = DEFAULT_PRIOR

    @classmethod
    def start(
        cls,
        m: int,
        *,
        epsilon: float,
        delta: float,
        lower: float = -1.0,
        caps: tuple[float, ...] = DEFAULT_CAPS,
        prior: float = DEFAULT_PRIOR,
    ) -> BettingState:
        """Fresh processes (wealth 1) for ``m`` candidates.

        Raises:
            OptimizerError: unless m >= 1, 0 < delta < 1, lower < epsilon < 1,
                at least one cap, each in (0, 1), and prior > 0.
        """
        if m < 1 or not 0.0 < delta < 1.0 or not lower < epsilon < 1.0:
            msg = f"need m >= 1, 0 < delta < 1 and {lower} < epsilon < 1"
            raise OptimizerError(msg)
        _check_bets(caps, prior)
        z = np.zeros(m)
        return cls(
            float(epsilon), float(delta), float(lower), 0, z, z.copy(), z.copy(),
            np.zeros((len(caps), m)), z.copy(), np.full(m, -1, np.int64),
            tuple(float(c) for c in caps), float(prior),
        )  # fmt: skip

    @property
    def m(self) -> int:
        """Number of candidates."""
        return int(self.sum_x.size)

    @property
    def log_wealth(self) -> FloatArray:
        """Log of the tested wealth per candidate: the average of the caps' processes."""
        return _average(self.components)

    @property
    def certified(self) -> BoolArray:
        """Whether each candidate's wealth has ever reached ``1/delta`` (latched)."""
        done: BoolArray = self.crossed_at >= 0
        return done

    @property
    def p_value(self) -> FloatArray:
        """Anytime-valid p-value per candidate: ``min(1, 1 / max wealth so far)``."""
        p: FloatArray = np.minimum(1.0, np.exp(-self.max_log_wealth))
        return p

    @property
    def mean(self) -> FloatArray:
        """Empirical mean loss per candidate (zeros before any sample)."""
        means: FloatArray = self.sum_d / max(self.n, 1)
        return means

    def update(self, d: npt.ArrayLike) -> BettingState:
        """Add samples (rows, in arrival order) of every candidate's loss (columns).

        Args:
            d: Losses, shape ``(n, m)``; ``n`` may be 0.

        Raises:
            OptimizerError: on a wrong shape or a loss outside ``[lower, 1]``.
        """
        losses = np.asarray(d, dtype=np.float64)
        if losses.ndim != 2 or losses.shape[1] != self.m:
            msg = f"losses must have shape (n, {self.m}), got {losses.shape}"
            raise OptimizerError(msg)
        n = losses.shape[0]
        if n == 0:
            return self
        if not np.all(np.isfinite(losses)) or losses.min() < self.lower or losses.max() > 1.0:
            msg = f"losses must be finite and within [{self.lower}, 1]"
            raise OptimizerError(msg)
        x = self.epsilon - losses
        tops = np.asarray(self.caps)[:, None] / (1.0 - self.epsilon)  # (caps, 1)
        # _prefix(v, s)[i] = s + v[0] + ... + v[i-1], summed in order, so any split
        # of the stream into batches gives the same state.
        sums, squares = _prefix(x, self.sum_x), _prefix(x * x, self.sum_x2)
        wanted = (sums[:-1] / (squares[:-1] + self.prior))[:, None, :]  # (n, 1, m)
        bets = np.clip(wanted, 0.0, tops)  # (n, caps, m)
        paths = _prefix(np.log1p(bets * x[:, None, :]), self.components)[1:]
        path = _average(paths, axis=1)
        over = path >= math.log(1.0 / self.delta)
        first = np.where(over.any(axis=0), self.n + 1 + over.argmax(axis=0), -1)
        return replace(
            self,
            n=self.n + n,
            sum_x=sums[-1],
            sum_x2=squares[-1],
            sum_d=self.sum_d + losses.sum(axis=0),
            components=paths[-1],
            max_log_wealth=np.maximum(self.max_log_wealth, path.max(axis=0)),
            crossed_at=np.where(self.crossed_at >= 0, self.crossed_at, first),
        )

    def to_json(self) -> dict[str, Any]:
        """The state as JSON-able values (floats round-trip exactly)."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "lower": self.lower,
            "caps": list(self.caps),
            "prior": self.prior,
            "n": self.n,
            "sum_x": self.sum_x.tolist(),
            "sum_x2": self.sum_x2.tolist(),
            "sum_d": self.sum_d.tolist(),
            "log_wealth": self.components.tolist(),
            "max_log_wealth": self.max_log_wealth.tolist(),
            "crossed_at": self.crossed_at.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BettingState:
        """Rebuild a state written by :meth:`to_json`.

        A state written before hedging (one ``cap``, one log wealth per
        candidate) goes on as a single process with that cap: switching a
        running process's bets to the average would not be valid.

        Raises:
            OptimizerError: if a field is missing or the arrays disagree in length.
        """
        try:
            sx, sx2, sd, mlw = (
                np.asarray(data[k], dtype=np.float64)
                for k in ("sum_x", "sum_x2", "sum_d", "max_log_wealth")
            )
            crossed = np.asarray(data["crossed_at"], dtype=np.int64)
            hedged = "caps" in data
            caps = tuple(float(c) for c in (data["caps"] if hedged else [data["cap"]]))
            lw = np.asarray(data["log_wealth"] if hedged else [data["log_wealth"]], np.float64)
            state = cls(
                float(data["epsilon"]), float(data["delta"]), float(data["lower"]),
                int(data["n"]), sx, sx2, sd, lw, mlw, crossed, caps, float(data["prior"]),
            )  # fmt: skip
            _check_bets(caps, state.prior)
        except (KeyError, TypeError, ValueError, OptimizerError) as exc:
            msg = f"invalid certificate state: {exc}"
            raise OptimizerError(msg) from None
        same = len({a.shape for a in (sx, sx2, sd, mlw, crossed)}) == 1 and crossed.ndim == 1
        if not same or lw.shape != (len(caps), crossed.size):
            msg = "invalid certificate state: arrays of different lengths"
            raise OptimizerError(msg)
        return state


def _check_bets(caps: tuple[float, ...], prior: float) -> None:
    if not caps or not all(0.0 < c < 1.0 for c in caps) or not prior > 0.0:
        msg = "need at least one cap, each 0 < cap < 1, and prior > 0"
        raise OptimizerError(msg)


def _average(log_wealth: FloatArray, axis: int = 0) -> FloatArray:
    # Log of the mean wealth over the caps' processes along ``axis`` (one process: itself,
    # exactly, as a reduce over one element returns it and log(1) is 0).
    mean: FloatArray = np.logaddexp.reduce(log_wealth, axis=axis) - math.log(log_wealth.shape[axis])
    return mean


def _prefix(values: FloatArray, start: FloatArray) -> FloatArray:
    # Row i: start plus the values of rows before i (n + 1 rows), summed in order.
    out = np.empty((values.shape[0] + 1, *values.shape[1:]))
    out[0], out[1:] = start, values
    summed: FloatArray = np.cumsum(out, axis=0, out=out)
    return summed


def fixed_sequence(certified: BoolArray, order: IntArray) -> tuple[int, ...]:
    """The certified prefix of ``order``: every candidate in it may be deployed.

    Args:
        certified: Per candidate, whether its null is rejected.
        order: Candidate indices, fixed before any data, safest first.
    """
    ok = np.asarray(certified, dtype=np.bool_)[order]
    k = int(ok.size if ok.all() else ok.argmin())
    return tuple(int(i) for i in order[:k])


def candidate_order(grid: npt.ArrayLike, off: float = 1.0) -> IntArray:
    """Indices of ``grid`` to test, safest (highest threshold) first.

    Thresholds at or above ``off`` never stop early by construction (the node
    treats 1.0 as off), so their loss is 0: they are deployable untested and
    left out, and the walk starts at the safest threshold that can stop.
    """
    values = np.asarray(grid, dtype=np.float64)
    keep = np.flatnonzero(values < off)
    order: IntArray = keep[np.argsort(-values[keep], kind="stable")].astype(np.int64)
    return order


@dataclass(frozen=True, slots=True)
class HarmDetector:
    """An e-detector of "the mean loss has risen above ``epsilon``" (CUSUM-like).

    Wealth ``W_t = max(1, W_{t-1}) * (1 + λ (d_t - epsilon))`` with a fixed bet
    λ: under no change (E[d] <= epsilon) the expected time to a false alarm
    is at least ``threshold`` samples (Shin, Ramdas and Rinaldo, 2024); after a
    change to a mean above epsilon the wealth grows geometrically.

    Attributes:
        epsilon: The tolerated mean loss.
        threshold: Alarm level (also the bound on the mean run length to a false alarm).
        bet: Fixed λ in (0, 1 / (1 + epsilon)).
        log_wealth: Current log wealth (0 after a restart).
        n: Samples seen.
    """

    epsilon: float
    threshold: float = 10_000.0
    """Mean run length to a false alarm >= 10,000 samples, even at E[d] = epsilon: a
    population fed 30 samples/s restarts at most about every 5 minutes by chance."""
    bet: float = 0.5
    """About 23 losses more than epsilon allows raise the alarm: quick after a real change."""
    log_wealth: float = 0.0
    n: int = 0

    def update(self, d: npt.ArrayLike) -> tuple[HarmDetector, int | None]:
        """Add losses in arrival order; return the new detector and the alarm sample, if any.

        The alarm index counts from the detector's first sample (1-based); after
        an alarm the caller restarts what the detector watched.
        """
        losses = np.asarray(d, dtype=np.float64).reshape(-1)
        if losses.size == 0:
            return self, None
        steps = np.log1p(self.bet * (losses - self.epsilon))
        log_wealth, at = cusum(self.log_wealth, steps, self.threshold)
        if at is not None:
            return replace(self, log_wealth=0.0, n=self.n + at), self.n + at
        return replace(self, log_wealth=log_wealth, n=self.n + losses.size), None


def cusum(log_wealth: float, steps: FloatArray, threshold: float) -> tuple[float, int | None]:
    """Run a CUSUM (wealth restarting at 1 whenever it falls below) over log ``steps``.

    Returns the log wealth after the last step and None, or, at the first step
    whose wealth reaches ``threshold``, 0.0 and that step's 1-based index.
    """
    # S_t = max(S_{t-1}, 0) + x_t is, with C_0 = S_0 and C_t = C_0 + x_1 + ... + x_t,
    # S_t = C_t - min(0, C_0, ..., C_{t-1}): one pass of prefix sums and minima.
    c = log_wealth + np.cumsum(steps)
    before = np.concatenate(([log_wealth], c[:-1]))
    wealth = c - np.minimum(np.minimum.accumulate(before), 0.0)
    over = np.flatnonzero(wealth >= math.log(threshold))
    if over.size:
        return 0.0, int(over[0]) + 1
    return float(wealth[-1]), None
