"""One segment drifts; the controller's cycles go on: how soon is it safe, what do the others keep?

Per seed the certificate book is fed a history (``history`` samples per
segment, another seed, before the drift), then ``warm`` cycles of
``per_segment`` new samples per segment, then the drift scenario's change of
``acme/qa/short`` (harder, over-confident), then ``after`` more cycles. Each
cycle's proposal is judged on held-out truth: the drifted segment on its
post-drift curve (is every mode's deployed threshold within its ε again?),
every other segment on its own curve (tokens saved against the last cycle
before the drift).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from _common import Report
from _quality_cycles import as_batch, batch, replay, shape_of

from pipeline.optimizer import PolicySpec, optimize
from pipeline.optimizer.certify import CertificateBook, advance
from pipeline.optimizer.proposal import SegmentDecision
from pipeline.sim import em_curve, oracle_threshold, sample_segment, scenario
from pipeline.sim.scenario import DRIFT_SEGMENT
from schemas import LoadMode

MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
HELD_OUT_SEED = 999_999
HELD_OUT = 20_000
"""Held-out trajectories of the drifted segment after the change."""


@dataclass
class DriftTally:
    """Per seed: cycles until the drifted segment is safe, others' saving kept, restarts."""

    safe_after: list[int | None] = field(default_factory=list)
    """Cycles after the drift until every mode of the drifted segment is within epsilon."""
    kept: list[float] = field(default_factory=list)
    """Others' saving over the drift cycles / their saving in the last cycle before it."""
    drifted_share: list[float] = field(default_factory=list)
    """The drifted segment's saving in the last cycle / its post-drift oracle's (normal)."""
    shares: list[list[float]] = field(default_factory=list)
    """Per seed, that share at every cycle after the drift."""
    unsafe_later: int = 0
    """Cycles, after the first safe one, that deployed a threshold outside epsilon again."""
    other_restarts: int = 0
    drifted_restarts: int = 0
    seeds: int = 0
    after: int = 0


def drift_cycles(
    spec: PolicySpec,
    env: Any,
    seeds: int,
    *,
    history: int = 1000,
    warm: int = 3,
    after: int = 10,
    per_segment: int = 100,
) -> DriftTally:
    """Run the drift story per seed; ``env`` is bench_quality's ``Setup``."""
    truth, grid, keys = env.truth, env.grid, list(env.truth.curves)
    drifted = scenario("drift", drift_at=0)
    min_tokens = spec.settings_for(DRIFT_SEGMENT).min_tokens
    latents = sample_segment(drifted, DRIFT_SEGMENT, HELD_OUT_SEED, HELD_OUT)
    post = em_curve(latents, grid, min_tokens)
    post_batch = as_batch(latents)

    def judged(decision: SegmentDecision) -> tuple[float, float]:
        """Token saving and EM drop of the drifted segment's rule on post-drift traffic."""
        j = grid.index(decision.threshold)
        shape = shape_of(decision)
        if shape is None:
            return post[j].token_saving, truth.point_drop(post[j])
        return replay(post_batch, decision.threshold, shape, min_tokens, signed=truth.signed)

    others = [k for k in keys if k != DRIFT_SEGMENT]
    signed = spec.risk.loss == "signed"
    best_after = oracle_threshold(post, spec.epsilon(DRIFT_SEGMENT, "normal"), signed=signed)
    post_oracle = best_after.threshold if best_after is not None else None
    tally = DriftTally(seeds=seeds, after=after)
    start = time.monotonic()
    for seed in range(seeds):
        book = CertificateBook.empty(spec)
        past = {k: batch(env.scen, k, 50_000 + seed, history) for k in keys}
        book, _ = advance(book, spec, past)
        body = optimize(spec, {}, book=book).body
        baseline = 0.0
        kept: list[float] = []
        safe: int | None = None
        last_share = 0.0
        shares: list[float] = []
        for cycle in range(warm + after):
            post_drift = cycle >= warm
            fresh = {
                k: batch(
                    drifted if (post_drift and k == DRIFT_SEGMENT) else env.scen,
                    k, 10_000 * (seed + 1) + cycle, per_segment,
                )
                for k in keys
            }  # fmt: skip
            book, events = advance(book, spec, fresh, current=body)
            for event in events:
                if "ends after" in event:
                    hit = event.startswith((DRIFT_SEGMENT, "qa:", "global:"))
                    tally.drifted_restarts += hit
                    tally.other_restarts += not hit
            proposal = optimize(spec, {}, current=body, book=book)
            body = proposal.body
            normal = {k: proposal.decision(k, "normal").threshold for k in others}
            shapes = {k: shape_of(proposal.decision(k, "normal")) for k in others}
            saved = truth.saved(normal, grid, shapes)
            if not post_drift:
                baseline = saved
                continue
            kept.append(saved / baseline if baseline > 0 else 1.0)
            ok = True
            for mode in MODES:
                ok &= judged(proposal.decision(DRIFT_SEGMENT, mode))[1] <= spec.epsilon(
                    DRIFT_SEGMENT, mode
                )
            if ok and safe is None:
                safe = cycle - warm + 1
            elif not ok and safe is not None:
                tally.unsafe_later += 1
                where = ", ".join(
                    f"{d.mode} {d.threshold} from {d.population}"
                    for d in proposal.decisions
                    if d.key == DRIFT_SEGMENT
                )
                print(
                    f"    cycle {cycle - warm + 1}: {DRIFT_SEGMENT} outside epsilon again: {where}"
                )
            got = judged(proposal.decision(DRIFT_SEGMENT, "normal"))[0]
            best = post[grid.index(post_oracle)].token_saving if post_oracle is not None else 0.0
            last_share = got / best if best > 0 else 1.0
            shares.append(last_share)
        tally.safe_after.append(safe)
        tally.kept.append(sum(kept) / len(kept) if kept else 1.0)
        tally.drifted_share.append(last_share)
        tally.shares.append(shares)
        took = time.monotonic() - start
        print(f"  drift: seed {seed + 1} of {seeds}, safe after {safe} cycles, "
              f"{took:.0f} s", flush=True)  # fmt: skip
    return tally


def add_drift(rep: Report, tally: DriftTally, per_segment: int, history: int) -> None:
    """Figures of the drift section."""
    safe = [s for s in tally.safe_after if s is not None]
    within = sum(s <= 2 for s in safe) / max(tally.seeds, 1)
    rep.add(
        "drift: drifted segment within epsilon within 2 cycles",
        100 * within,
        "%",
        goal="all seeds",
        met=within >= 1.0,
        detail=(
            f"{tally.seeds} seeds; cycles to safe: "
            + ", ".join(f"{k}: {sum(s == k for s in safe)}" for k in sorted(set(safe)))
            + f"; never within {tally.after}: {tally.safe_after.count(None)}; "
            f"cycles outside epsilon again later: {tally.unsafe_later}"
        ),
    )
    kept = sum(tally.kept) / max(len(tally.kept), 1)
    rep.add(
        "drift: other segments' saving kept through the drift",
        100 * kept,
        "%",
        goal=">= 90%",
        met=kept >= 0.9,
        detail=f"normal mode, mean over {tally.after} cycles after the drift and seeds; "
        f"worst seed {100 * min(tally.kept, default=1.0):.0f}%",
    )
    share = sum(tally.drifted_share) / max(len(tally.drifted_share), 1)
    by_cycle = [
        sum(s[c] for s in tally.shares) / max(len(tally.shares), 1) for c in range(tally.after)
    ]
    rep.add(
        f"drift: drifted segment's saving / its new oracle's after {tally.after} cycles",
        100 * share,
        "%",
        detail="normal mode; it serves no early stop until its new epoch certifies again; "
        "mean by cycle after the drift: "
        + ", ".join(f"{c + 1}: {100 * v:.0f}%" for c, v in enumerate(by_cycle)),
    )
    rep.notes.append(
        f"Drift: per seed, {history:,} history samples per segment, then cycles of "
        f"{per_segment:,} new samples per segment (about what `pipeline demo` gives the "
        f"drifted segment per 30 s cycle); after 3 cycles `{DRIFT_SEGMENT}` takes the drift "
        f"scenario's change (harder, over-confident) for {tally.after} cycles. Safe means every "
        "load mode's deployed threshold has a held-out post-drift EM drop within its epsilon. "
        f"Restarts: {tally.drifted_restarts} of the drifted segment and its pools, "
        f"{tally.other_restarts} of other populations (false alarms)."
    )
