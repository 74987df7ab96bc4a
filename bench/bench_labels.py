"""Labels optional: what certification keeps when only a share of exploration is labeled.

    .venv/bin/python bench/bench_labels.py                 # 10 seeds
    .venv/bin/python bench/bench_labels.py --quick

Per seed, ``--requests`` exploration requests of the simulator's standard
scenario (18 segments, trial answers as strings that flicker and stick like
the real sample's). Each request is labeled with probability ``share``,
independently of its outcome. The certificates of the shipped spec
(``policies/earlystop.yaml``: anytime, signed loss) are fed:

- ``disagreement``: every request; an unlabeled one through the disagreement
  bound (:func:`pipeline.controller.reader.disagreement_rows`: a checkpoint
  is wrong unless its trial answer equals the full answer after EM
  normalisation, the full answer right);
- ``skip``: the labeled requests only.

The chosen thresholds (normal mode, epsilon 0.02) are judged on held-out
truth (the true signed EM drop of each segment, 20,000 requests per segment
of a seed no run uses): tokens saved over the fleet against the oracle's,
and violations (a deployed threshold whose true EM drop on its population
exceeds epsilon). Pure computation: no services.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from pathlib import Path

from _common import Report, add_json_argument, print_figures
from bench_quality import setup

from pipeline.optimizer import ExplorationBatch, Trajectory, load_spec, optimize
from pipeline.sim import scenario
from pipeline.sim.model import SimRequest, generate
from pipeline.stream.em import normalize_answer

ROOT = Path(__file__).resolve().parents[1]
MODE = "normal"


def _trajectory(request: SimRequest, labeled: bool) -> Trajectory:
    lat = request.latent
    if labeled:
        return Trajectory(lat.tokens, lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1])
    full = normalize_answer(request.answers[-1])
    same = tuple(normalize_answer(a) == full for a in request.answers)
    return Trajectory(lat.tokens, lat.confidence, same, True, lat.tokens[-1])


def batches(
    requests: list[SimRequest], share: float, seed: int, *, skip: bool
) -> dict[str, ExplorationBatch]:
    """Exploration batches with ``share`` of requests labeled (a coin per request)."""
    coin = random.Random(seed)  # noqa: S311  # a reproducible coin, not a secret
    per_key: dict[str, list[Trajectory]] = defaultdict(list)
    for request in requests:
        labeled = coin.random() < share
        if labeled or not skip:
            per_key[request.spec.key].append(_trajectory(request, labeled))
    return {k: ExplorationBatch.from_trajectories(v) for k, v in per_key.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20_000, help="exploration per seed")
    parser.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.05, 0.0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 10,000 requests")
    add_json_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.requests = 3, 10_000
    spec = load_spec(ROOT / "policies" / "earlystop.yaml").model_copy(update={"max_step": 1.0})
    env = setup(spec, 20_000)
    truth, grid = env.truth, env.grid
    best = truth.saved(env.oracle[MODE], grid)
    scen = scenario("standard")
    ratios: dict[tuple[str, float], list[float]] = defaultdict(list)
    violations: dict[tuple[str, float], int] = defaultdict(int)
    start = time.monotonic()
    for seed in range(args.seeds):
        requests = [generate(scen, 7_000 + seed, i) for i in range(args.requests)]
        for share in args.shares:
            for how in ("disagreement", "skip"):
                if how == "skip" and share == 1.0:
                    continue
                data = batches(requests, share, seed, skip=how == "skip")
                if not data:
                    ratios[how, share].append(0.0)
                    continue
                proposal = optimize(spec, data)
                chosen = {k: proposal.decision(k, MODE).threshold for k in truth.curves}
                ratios[how, share].append(truth.saved(chosen, grid) / best)
                violations[how, share] += any(
                    truth.drop(d.population, grid.index(d.threshold)) > d.epsilon
                    for d in proposal.decisions
                    if d.mode == MODE and d.population is not None and d.threshold < 1.0
                )
        took = time.monotonic() - start
        print(f"  seed {seed + 1} of {args.seeds}, {took:.0f} s", flush=True)
    rep = Report(
        section="Labels optional: certification with a share of exploration labeled",
        command=f"bench/bench_labels.py --seeds {args.seeds} --requests {args.requests}",
    )
    for share in args.shares:
        for how in ("disagreement", "skip"):
            values = ratios.get((how, share))
            if not values:
                continue
            mean = sum(values) / len(values)
            rep.add(
                f"{share:.0%} labeled, {how}: saving / oracle's",
                100 * mean,
                "%",
                detail=(
                    f"normal mode, epsilon {spec.epsilon('acme/qa/short', MODE):g}, "
                    f"{len(values)} seeds; seeds where some population of the mode violates: "
                    f"{violations[how, share]}"
                ),
            )
    rep.notes.append(
        f"{args.requests:,} exploration requests per seed over the 18 segments (one look "
        "of the anytime certificates), labeled with the given probability independently "
        "of the outcome; the oracle saves "
        f"{100 * best / env.per_request:.1f}% of fleet tokens. 'skip' drops unlabeled "
        "requests (valid only because labeling here ignores the outcome); 'disagreement' "
        "counts them through the disagreement bound (valid whatever labeling does)."
    )
    print_figures(rep, name=44, value="7.1f", unit=2)
    rep.write(args.json)


if __name__ == "__main__":
    main()
