"""The demo's cold start: certificates seeded from a history, then adapted online.

A fleet that has run before has exploration data. The demo stands for it with
a history drawn from the simulator with another seed (the traffic before the
drift: the same segments, another stream of requests) and feeds it to the
controller's anytime certificates before the controller starts, exactly as a
cycle would (:func:`pipeline.optimizer.certify.advance`), saving the book with
a watermark at the start of live traffic. The first cycle proposes what the
history certifies; live samples then extend the same certificates, and the
harm detectors restart the segment that drifts. The promise is unchanged:
the history is earlier samples of the same stationary stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline.controller.certificates import Saved, book_path, save_book
from pipeline.optimizer import load_spec
from pipeline.optimizer.certify import CertificateBook, advance
from pipeline.optimizer.curve import ExplorationBatch, Trajectory
from pipeline.sim.model import Latent, request_rng, sample_latent
from pipeline.sim.scenario import Scenario

HISTORY_SEED_OFFSET = 1_000_003
"""Added to the run's seed: the history never repeats a live request's draws."""


@dataclass(frozen=True, slots=True)
class History:
    """What was fed to the certificates before live traffic."""

    samples: int
    segments: int
    certified: int
    """Populations with a threshold below 1.0 deployable at their tolerance."""
    path: Path


def _trajectory(latent: Latent) -> Trajectory:
    # An exploration event carries every checkpoint; the last is the end of the generation.
    return Trajectory(
        tokens=latent.tokens,
        confidence=latent.confidence,
        correct=latent.correct,
        full_correct=latent.correct[-1],
        full_tokens=latent.tokens[-1],
    )


def history_batches(
    scen: Scenario, seed: int, per_segment: int, budgets: Mapping[str, int]
) -> dict[str, ExplorationBatch]:
    """``per_segment`` exploration trajectories of every segment, before any drift.

    ``budgets`` are the token budgets the live fleet cuts each segment's
    generations at (the policy's, as :func:`pipeline.sim.fleet` applies them);
    a history cut at another budget is another stream, whose loss rates the
    change detectors would read as a change.
    """
    batches: dict[str, ExplorationBatch] = {}
    for segment in scen.segments:
        spec = scen.spec_at(segment.key, 0)
        stream = f"history/{segment.key}"
        rows = [
            _trajectory(
                sample_latent(
                    spec,
                    scen.checkpoint_every,
                    budgets[segment.key],
                    request_rng(seed + HISTORY_SEED_OFFSET, i, stream),
                )
            )
            for i in range(per_segment)
        ]
        batches[segment.key] = ExplorationBatch.from_trajectories(rows)
    return batches


def seed_certificates(
    state_dir: Path, spec_path: Path, scen: Scenario, seed: int, per_segment: int, start: datetime
) -> History:
    """Feed the history to a fresh certificate book and save it where the controller reads it."""
    spec = load_spec(spec_path)
    # Cut where live traffic is cut: the spec's budget per segment (the policy's).
    budgets = {s.key: spec.settings_for(s.key).token_budget for s in scen.segments}
    batches = history_batches(scen, seed, per_segment, budgets)
    known = list(spec.default_policy.segments)
    book, _ = advance(CertificateBook.empty(spec), spec, batches, known)
    path = book_path(state_dir, spec.name)
    save_book(path, Saved(book, start))
    certified = sum(
        1
        for population in book.populations.values()
        if any(population.deployable(epsilon) for epsilon in population.states)
    )
    return History(
        samples=sum(len(b) for b in batches.values()),
        segments=len(batches),
        certified=certified,
        path=path,
    )
