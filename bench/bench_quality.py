"""Decision quality against the oracle: optimizer cycles on simulated calibration data.

    .venv/bin/python bench/bench_quality.py                 # 100 seeds
    .venv/bin/python bench/bench_quality.py --seeds 200 --samples 20000 --json out.json

Per seed, exploration samples of the standard scenario's 18 segments (the
simulator, ``pipeline.sim``; ``--samples`` in all, split by traffic weight)
feed one optimizer cycle under the shipped spec (``policies/earlystop.yaml``)
with its step limit lifted, from the safe default policy. The chosen
thresholds are then judged on held-out data: a large sample of every segment
from a seed no calibration uses. There, per load mode:

- tokens saved by the chosen policy over the fleet (segments weighted by
  traffic and full-generation length) divided by the tokens the oracle saves:
  the simulator's oracle threshold of every segment at the same epsilon,
  found on the same held-out data;
- a violation: any decision of the mode whose held-out EM drop on its
  (possibly pooled) population exceeds its epsilon. The guarantee bounds the
  share of seeds with one by delta.

A decision served by a one-step schedule (``spec.schedules``) is judged the
same way, by replaying the schedule on the held-out trajectories; the oracle
stays the best plain threshold, so a ratio above 100% is what schedules add.

Pure computation: no services.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from _common import Report, add_json_argument, percentile, print_figures
from _quality_cycles import CycleTally, as_batch, batch, repeated_cycles, replay, shape_of
from _quality_drift import add_drift, drift_cycles
from scipy import stats

from pipeline.optimizer import ExplorationBatch, PolicySpec, load_spec, optimize
from pipeline.optimizer.curve import Shape
from pipeline.sim import CurvePoint, em_curve, oracle_threshold, sample_segment, scenario
from pipeline.sim.scenario import Scenario
from schemas import LoadMode

ROOT = Path(__file__).resolve().parents[1]
MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
HELD_OUT_SEED = 999_999
GOAL = 0.90


@dataclass(frozen=True)
class Truth:
    """Held-out curves of every segment, and what pooling them needs."""

    curves: dict[str, tuple[CurvePoint, ...]]
    weight: dict[str, float]
    full_tokens: dict[str, float]
    """Mean tokens of a full generation."""
    signed: bool = True
    """Judge the signed EM drop (full minus served EM), else the one-sided loss."""
    batches: dict[str, ExplorationBatch] = field(default_factory=dict)
    """The held-out trajectories, to replay schedules on."""
    grid: tuple[float, ...] = ()
    min_tokens: int = 0
    memo: dict[tuple[str, float, Shape], tuple[float, float]] = field(default_factory=dict)

    def scheduled(self, key: str, theta: float, shape: Shape) -> tuple[float, float]:
        """Held-out token saving and EM drop of a segment under a one-step schedule."""
        found = self.memo.get((key, theta, shape))
        if found is None:
            found = replay(self.batches[key], theta, shape, self.min_tokens, signed=self.signed)
            self.memo[key, theta, shape] = found
        return found

    def drop(
        self, population: str, j: int, *, equal: bool = False, shape: Shape | None = None
    ) -> float:
        """Held-out EM drop at grid index ``j`` of a segment, a task or ``global``.

        Pooled populations mix their segments by traffic weight, or ``equal``ly
        when every segment contributed as many samples.
        """
        members = [k for k in self.curves if population in (k, "global", k.split("/")[1])]
        weight = {k: 1.0 if equal else self.weight[k] for k in members}
        total = sum(weight.values())
        if shape is not None:
            theta = self.grid[j]
            return sum(weight[k] * self.scheduled(k, theta, shape)[1] for k in members) / total
        return sum(weight[k] * self.point_drop(self.curves[k][j]) for k in members) / total

    def point_drop(self, point: CurvePoint) -> float:
        """The EM drop of one curve point under this truth's definition."""
        return point.em_drop - point.em_gain if self.signed else point.em_drop

    def saved(
        self,
        thresholds: Mapping[str, float | None],
        grid: tuple[float, ...],
        shapes: Mapping[str, Shape | None] | None = None,
    ) -> float:
        """Tokens saved per request over the fleet under per-segment thresholds (None: none).

        ``shapes``: a key's one-step schedule shape, when it is served one.
        """
        total = sum(self.weight.values())
        saved = 0.0
        for key, theta in thresholds.items():
            if theta is not None:
                shape = (shapes or {}).get(key)
                if shape is not None:
                    saving = self.scheduled(key, theta, shape)[0]
                else:
                    saving = self.curves[key][grid.index(theta)].token_saving
                saved += self.weight[key] * self.full_tokens[key] * saving
        return saved / total


def held_out(
    scen: Scenario, grid: tuple[float, ...], min_tokens: int, n: int, *, signed: bool
) -> Truth:
    curves, full, batches = {}, {}, {}
    for spec in scen.segments:
        latents = sample_segment(scen, spec.key, HELD_OUT_SEED, n)
        curves[spec.key] = em_curve(latents, grid, min_tokens)
        full[spec.key] = sum(lat.tokens[-1] for lat in latents) / len(latents)
        batches[spec.key] = as_batch(latents)
    weight = {s.key: s.weight for s in scen.segments}
    return Truth(curves, weight, full, signed, batches, grid, min_tokens)


def calibration(scen: Scenario, seed: int, samples: int) -> dict[str, ExplorationBatch]:
    total = sum(s.weight for s in scen.segments)
    out = {}
    for spec in scen.segments:
        n = max(1, round(samples * spec.weight / total))
        out[spec.key] = batch(scen, spec.key, seed, n)
    return out


@dataclass
class Tally:
    ratios: list[float]
    violations: int = 0
    chosen_saving: float = 0.0
    oracle_saving: float = 0.0
    tests: int = 0
    """Tests the mode's delta was split over (last cycle)."""
    pooled: int = 0
    """Segment decisions that fell back to a pooled population, over all seeds."""


@dataclass(frozen=True)
class Setup:
    scen: Scenario
    grid: tuple[float, ...]
    truth: Truth
    oracle: dict[str, dict[str, float | None]]
    per_request: float
    """Mean full-generation tokens per request over the fleet."""


def setup(spec: PolicySpec, held_n: int) -> Setup:
    scen = scenario("standard")
    grid = spec.thresholds()
    start = time.monotonic()
    signed = spec.risk.loss == "signed"
    truth = held_out(scen, grid, spec.settings_for("global").min_tokens, held_n, signed=signed)
    print(f"held-out curves: 18 segments x {held_n} in {time.monotonic() - start:.0f} s")
    oracle: dict[str, dict[str, float | None]] = {}
    for mode in MODES:
        row = {}
        for key in truth.curves:
            best = oracle_threshold(truth.curves[key], spec.epsilon(key, mode), signed=signed)
            row[key] = best.threshold if best is not None else None
        oracle[mode] = row
    per_request = sum(truth.weight[k] * truth.full_tokens[k] for k in truth.curves)
    return Setup(scen, grid, truth, oracle, per_request / sum(truth.weight.values()))


def cycles(spec: PolicySpec, env: Setup, seeds: int, samples: int) -> dict[str, Tally]:
    """One optimizer cycle per seed, judged on the held-out data."""
    truth, grid = env.truth, env.grid
    tallies: dict[str, Tally] = {mode: Tally([]) for mode in MODES}
    start = time.monotonic()
    for seed in range(seeds):
        proposal = optimize(spec, calibration(env.scen, seed, samples))
        for mode in MODES:
            chosen = {k: proposal.decision(k, mode).threshold for k in truth.curves}
            shapes = {k: shape_of(proposal.decision(k, mode)) for k in truth.curves}
            got, best = truth.saved(chosen, grid, shapes), truth.saved(env.oracle[mode], grid)
            tally = tallies[mode]
            tally.tests = proposal.tests[mode]
            tally.pooled += sum(proposal.decision(k, mode).fell_back for k in truth.curves)
            tally.ratios.append(got / best if best > 0 else 1.0)
            tally.chosen_saving += got / env.per_request / seeds
            tally.oracle_saving += best / env.per_request / seeds
            tally.violations += any(
                truth.drop(d.population, grid.index(d.threshold), shape=shape_of(d)) > d.epsilon
                for d in proposal.decisions
                if d.mode == mode and d.population is not None
            )
        if (seed + 1) % 10 == 0:
            took = time.monotonic() - start
            print(f"  {samples:,} samples: {seed + 1} of {seeds} seeds, {took:.0f} s", flush=True)
    return tallies


def add_cycles(rep: Report, spec: PolicySpec, tally: CycleTally, args: argparse.Namespace) -> None:
    """Figures of the repeated-cycles section."""
    last = args.cycles - 1
    for cycle, goal in ((0, 0.70), (last, GOAL)):
        ratio = tally.mean_ratio("normal", cycle)
        rep.add(
            f"normal: repeated cycles, saving / oracle's at cycle {cycle + 1}",
            100 * ratio,
            "%",
            goal=f">= {goal:.0%}",
            met=ratio >= goal,
            detail=(
                f"{args.per_segment:,} new samples per segment per cycle, "
                f"{tally.seeds} seeds; offpeak {100 * tally.mean_ratio('offpeak', cycle):.0f}%, "
                f"peak {100 * tally.mean_ratio('peak', cycle):.0f}%"
            ),
        )
    decisions = tally.seeds * tally.segments * args.cycles
    rep.add(
        "normal: repeated cycles, segment decisions served by a schedule",
        100 * tally.scheduled["normal"] / max(decisions, 1),
        "%",
        detail=(
            f"of {decisions:,} (segment, seed, cycle) decisions; offpeak "
            f"{100 * tally.scheduled['offpeak'] / max(decisions, 1):.0f}%, peak "
            f"{100 * tally.scheduled['peak'] / max(decisions, 1):.0f}% (schedules: share "
            f"{spec.schedules.share:g} of delta, {spec.schedules.selection_samples} selection rows)"
        ),
    )
    pairs = tally.seeds * tally.segments
    for mode in MODES:
        used = max(tally.populations_used[mode], 1)
        allowed = float(stats.binom.ppf(0.99, used, spec.risk.delta)) / used
        rate = tally.population_violations[mode] / used
        rep.add(
            f"{mode}: certificates ever deploying a bad threshold",
            100 * rate,
            "%",
            goal=f"<= delta {spec.risk.delta:g} (<= {allowed:.1%} at {used})",
            met=rate <= allowed,
            detail=(
                f"(population, seed) pairs served from, over {args.cycles} cycles; "
                f"(segment, seed) pairs: {100 * tally.pair_violations[mode] / pairs:.1f}%; "
                f"family-wise: {tally.seed_violations[mode]} of {tally.seeds} seeds"
            ),
        )
    rep.notes.append(
        f"Repeated cycles: the controller's loop on a stationary stream, {args.cycles} cycles "
        f"of {args.per_segment:,} new exploration samples per segment, certificates "
        f"accumulated across cycles ({spec.risk.method}, {spec.risk.loss} loss, split "
        f"{spec.risk.split}); {tally.restarts} restarts by the change detectors in all "
        "(false alarms: the stream is stationary). The promise is "
        "per (segment or pooled population, epsilon): a pair violates when any cycle deploys "
        "a threshold whose held-out EM drop on its population exceeds epsilon."
    )


def report(
    spec: PolicySpec,
    tallies: dict[str, Tally],
    sweep: dict[int, Tally],
    args: argparse.Namespace,
) -> Report:
    seeds, samples, held_n, quick = args.seeds, args.samples, args.held_out, args.quick
    delta = spec.risk.delta
    # Largest violation share a true rate of delta explains at 99% (binomial noise).
    allowed = float(stats.binom.ppf(0.99, seeds, delta)) / seeds
    command = ".venv/bin/python bench/bench_quality.py" + (" --quick" if quick else "")
    rep = Report("Decision quality against the oracle", command)
    for mode in MODES:
        tally = tallies[mode]
        eps = spec.load_modes.model_dump()[mode]["epsilon"]
        mean = statistics.fmean(tally.ratios)
        rep.add(
            f"{mode} (epsilon {eps:g}): saving / oracle's, mean",
            100 * mean,
            "%",
            goal=f">= {GOAL:.0%}",
            met=mean >= GOAL,
            detail=(
                f"fleet tokens saved {tally.chosen_saving:.1%} vs oracle "
                f"{tally.oracle_saving:.1%}, over {seeds} seeds"
            ),
        )
        rep.add(
            f"{mode}: saving / oracle's, 5th percentile",
            100 * percentile(tally.ratios, 0.05),
            "%",
            detail=f"worst seed {100 * min(tally.ratios):.1f}%",
        )
        rate = tally.violations / seeds
        family = spec.risk.split != "none"  # else delta is per certificate, not per seed
        rep.add(
            f"{mode}: seeds with an EM-drop violation",
            100 * rate,
            "%",
            goal=f"<= delta {delta:g} (<= {allowed:.0%} at {seeds} seeds)" if family else None,
            met=rate <= allowed if family else None,
            detail=(
                f"{tally.violations} of {seeds}; any decision of the mode over its epsilon"
                + ("" if family else " (family-wise; the promise is per certificate)")
            ),
        )
    normal = tallies["normal"]
    if statistics.fmean(normal.ratios) < GOAL and spec.risk.method == "ltt":
        eps = spec.load_modes.normal.epsilon
        per_test = delta / max(normal.tests, 1)
        n = round(samples / sum(s.weight for s in scenario("standard").segments))
        k = int(stats.binom.ppf(per_test, n, eps))
        while k >= 0 and stats.binom.cdf(k, n, eps) > per_test:
            k -= 1
        rep.notes.append(
            f"Why 90% is not met: the price of the guarantee at this sample size. In normal "
            f"mode delta {delta:g} is split over {normal.tests} tests, {per_test:.4f} each; a "
            f"segment of weight 1 has about {n:,} samples per cycle, and a threshold is "
            f"certified at epsilon {eps:g} only if it shows at most {k} losses there "
            f"({max(k, 0) / n:.2%} empirical EM drop against the {eps:.0%} allowed). So the "
            "optimizer stops where the true drop is well under epsilon while the oracle, "
            "which knows the curve, goes to epsilon. More exploration samples close the gap "
            "(the sample-size rows), as does a looser epsilon (peak mode); the statistics "
            "are the optimizer's, and this script changes none of them."
        )
    for size, tally in sweep.items():
        n = len(tally.ratios)
        rep.add(
            f"normal: saving / oracle's with {size:,} samples per cycle, mean",
            100 * statistics.fmean(tally.ratios),
            "%",
            detail=(
                f"{n} seeds; {tally.violations} with a violation; "
                f"{tally.pooled / n:.1f} of 18 segments pooled per cycle"
            ),
        )
    if sweep:
        rep.notes.append(
            f"The sample-size rows: with fewer samples than min_samples "
            f"({spec.min_samples}) a segment takes its task's (or the global) threshold, "
            "certified for the pooled population only, which is more aggressive than the "
            "segment's own for the easier segments: so the ratio is not monotone in the "
            "sample size, and the pooled guarantee says nothing about one small segment."
        )
    rep.notes.append(
        f"Calibration: {samples:,} exploration samples per cycle over the 18 segments of the "
        f"standard scenario, split by traffic weight; held-out: {held_n:,} per segment from "
        "a seed no cycle uses. One optimizer cycle per seed (one look) under "
        f"policies/earlystop.yaml (risk: {spec.risk.method}, {spec.risk.loss} loss, split "
        f"{spec.risk.split}) with max_step lifted to 1.0: the step limit brakes rollouts and "
        "is not what this measures. The oracle and the violations use the same EM-drop "
        "definition as the spec."
    )
    rep.notes.append(
        "The oracle knows each segment's held-out curve and takes, per segment, the most "
        "aggressive threshold the fixed-sequence walk reaches within epsilon; the optimizer "
        "must certify P(EM drop > epsilon) <= delta from a few hundred to two thousand "
        "samples per segment, so it stops earlier on the walk, more so where its tests run "
        "at delta/tests. A violation share above delta only by binomial noise is allowed "
        "(99% quantile of Binomial(seeds, delta))."
    )
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--samples", type=int, default=20_000, help="calibration samples per cycle")
    parser.add_argument("--held-out", type=int, default=20_000, help="held-out samples per segment")
    parser.add_argument(
        "--sweep", type=int, nargs="*", default=[5_000, 80_000], help="other sample sizes"
    )
    parser.add_argument("--sweep-seeds", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=20, help="repeated cycles per seed")
    parser.add_argument("--per-segment", type=int, default=1000, help="new samples per cycle")
    parser.add_argument("--cycle-seeds", type=int, default=5, help="seeds of repeated cycles")
    parser.add_argument("--drift-seeds", type=int, default=20, help="seeds of the drift story")
    parser.add_argument("--quick", action="store_true", help="10 seeds, 5,000 held out, no sweep")
    add_json_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.held_out, args.sweep, args.sweep_seeds = 10, 5_000, [], 0
        args.cycles, args.per_segment, args.cycle_seeds = 3, 300, 2
        args.drift_seeds = 2
    spec = load_spec(ROOT / "policies" / "earlystop.yaml").model_copy(update={"max_step": 1.0})
    env = setup(spec, args.held_out)
    tallies = cycles(spec, env, args.seeds, args.samples)
    sweep = {size: cycles(spec, env, args.sweep_seeds, size)["normal"] for size in args.sweep}
    rep = report(spec, tallies, sweep, args)
    if args.cycle_seeds > 0 and spec.risk.method == "anytime":
        tally = repeated_cycles(spec, env, args.cycle_seeds, args.cycles, args.per_segment)
        add_cycles(rep, spec, tally, args)
    if args.drift_seeds > 0 and spec.risk.method == "anytime":
        drift = drift_cycles(spec, env, args.drift_seeds, history=1000, per_segment=100)
        add_drift(rep, drift, per_segment=100, history=1000)
    print_figures(rep, name=48, value="7.1f", unit=2)
    rep.write(args.json)


if __name__ == "__main__":
    main()
