"""A tiny generative model of exploration trajectories whose truth is known exactly.

Self-contained so the optimizer's tests do not depend on the simulator. To run
them on ``pipeline.sim`` instead, draw ``sample_segment(scen, key, seed, n)``
latents, pack them with ``ExplorationBatch.from_trajectories(Trajectory(lat.tokens,
lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1]) ...)`` and take
the truth from ``ground_truth(...)[key].curve`` (Monte Carlo, not exact).

The story of one request of a segment:

- ``K`` checkpoints, uniform on ``k_min..k_max``, one every ``every`` tokens;
  the last one is the end of the generation.
- The full answer is right with probability ``p_full``. If it is, the trial
  answer becomes right at checkpoint ``S`` (uniform on ``0..K-1``) and stays
  right; if not, trial answers are right only by a small guess rate.
- Confidence at checkpoint ``i`` is ``sigmoid(beta * (i - S) + Z + e_i)``
  with a per-request offset ``Z ~ N(mu, sigma)`` (over-confidence when
  ``mu`` is high) and checkpoint noise ``e_i ~ N(0, tau)``, independent.

A loss (full right, early wrong) happens exactly when some eligible checkpoint
before ``S`` reaches the threshold, so, given ``K``, ``S`` and ``Z``, the
chance of none is a product of normal CDFs; Gauss-Hermite quadrature over
``Z`` and a sum over ``K`` and ``S`` give the true EM drop and token use.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import special, stats

from pipeline.optimizer import ExplorationBatch, PolicySpec, parse_spec

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SPEC_PATH = POLICIES / "earlystop.yaml"


LTT_RISK = {"method": "ltt", "loss": "one_sided", "split": "segments"}
"""The one-look procedure most optimizer tests were written for; the anytime
certificates (the shipped spec's method) have their own tests, which say so."""


def spec_data() -> dict[str, Any]:
    """The shipped spec as plain data, its default policy inlined, risk on ``LTT_RISK``."""
    data = yaml.safe_load(SPEC_PATH.read_text())
    data["default_policy"] = json.loads((POLICIES / data["default_policy"]).read_text())
    data["risk"] = {**data["risk"], **LTT_RISK}
    return data


def spec_with(**changes: Any) -> PolicySpec:
    """The shipped spec with top-level fields replaced; a dict value merges one level deep."""
    data = copy.deepcopy(spec_data())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_spec(data)


@dataclass(frozen=True)
class SegmentModel:
    p_full: float = 0.8
    k_min: int = 8
    k_max: int = 16
    every: int = 16
    beta: float = 0.6
    mu: float = 0.0
    sigma: float = 1.0
    tau: float = 0.5
    guess: float = 0.05

    def sample(self, n: int, rng: np.random.Generator) -> ExplorationBatch:
        k = rng.integers(self.k_min, self.k_max + 1, size=n)
        s = np.floor(rng.random(n) * k).astype(np.int64)
        z = rng.normal(self.mu, self.sigma, size=n)
        cols = np.arange(self.k_max)
        noise = rng.normal(0.0, self.tau, size=(n, self.k_max))
        confidence = special.expit(self.beta * (cols[None, :] - s[:, None]) + z[:, None] + noise)
        full = rng.random(n) < self.p_full
        lucky = rng.random((n, self.k_max)) < self.guess
        correct = np.where(full[:, None], cols[None, :] >= s[:, None], lucky)
        last = k - 1
        correct[np.arange(n), last] = full
        return ExplorationBatch(
            tokens=np.broadcast_to((cols + 1) * self.every, (n, self.k_max)).astype(np.int64),
            confidence=confidence,
            correct=correct,
            length=k.astype(np.int64),
            full_tokens=(k * self.every).astype(np.int64),
            full_correct=full,
        )

    def truth(self, grid: tuple[float, ...], min_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """True loss rate and expected tokens per grid threshold."""
        nodes, weights = np.polynomial.hermite_e.hermegauss(96)
        z = self.mu + self.sigma * nodes
        w = weights / weights.sum()
        logit = special.logit(np.clip(np.asarray(grid), 1e-12, 1 - 1e-12))
        drop = np.zeros(len(grid))
        tokens = np.zeros(len(grid))
        ks = range(self.k_min, self.k_max + 1)
        for k in ks:
            t = (np.arange(k) + 1) * self.every
            eligible = (t >= min_tokens) & (np.arange(k) < k - 1)
            for s in range(k):
                # P(c_i < theta | Z) per (threshold, z, checkpoint).
                shift = self.beta * (np.arange(k) - s)
                below = special.ndtr(
                    (logit[:, None, None] - shift[None, None, :] - z[None, :, None]) / self.tau
                )
                below = np.where(eligible[None, None, :], below, 1.0)
                none_before = np.cumprod(below, axis=2)
                # P(no eligible qualifier before s) and P(first stop at i).
                clear = np.ones_like(none_before[:, :, :1])
                prev = np.concatenate([clear, none_before[:, :, :-1]], axis=2)
                stop_at = prev * (1.0 - below)
                used = (stop_at * t).sum(axis=2) + none_before[:, :, -1] * t[-1]
                safe = prev[:, :, s]
                weight = 1.0 / (len(ks) * k)
                drop += weight * self.p_full * ((1.0 - safe) @ w)
                tokens += weight * (used @ w)
        return drop, tokens


def true_oracle(drop: np.ndarray, epsilon: float) -> int | None:
    """Index the fixed-sequence walk reaches on the true curve (as ``pipeline.sim``'s oracle)."""
    index = None
    for j in range(len(drop) - 1, -1, -1):
        if drop[j] > epsilon:
            break
        index = j
    return index


def binomial_allowance(runs: int, rate: float, quantile: float = 0.99) -> float:
    """Largest violation share consistent with a true rate of ``rate`` (upper quantile)."""
    return float(stats.binom.ppf(quantile, runs, rate)) / runs
