"""Cold start on real trajectories: anytime certificates against plain LTT, on held-out halves.

    .venv/bin/python bench/bench_calibrate.py                    # 20 splits
    .venv/bin/python bench/bench_calibrate.py --splits 100 --json out.json

The real sample (``data/real/real_trajectories_sample.jsonl``: 90
requests of SmolLM2-135M, three segments of 30) is split at random, within
each segment, into a calibration half and a test half, ``--splits`` times
(seeded). On each calibration half ``pipeline calibrate``'s certification
(:func:`pipeline.optimizer.offline.calibrate`) runs twice at each epsilon,
with one epsilon in every load mode, delta ``--delta``:

- anytime: the shipped spec's method (betting e-processes, signed loss
  ``EM_full - EM_early``, fixed sequence from the safest threshold below 1.0);
- ltt: plain Learn-then-Test (one look, exact binomial p-values of the
  one-sided loss ``1[full right, early wrong]``, fixed sequence from 1.0 down);
- signed: one look at the signed loss (paired Clopper-Pearson bounds of the
  loss and gain rates, :func:`pipeline.optimizer.ltt.signed_p_value`), what
  ``pipeline calibrate`` runs by default.

Both use the spec's other settings (split ``none``: delta per certificate,
min_tokens 32) with ``--min-samples`` (a population with fewer samples pools
into its parent) and no step limit. The certified policy is replayed on both
halves (:func:`pipeline.optimizer.offline.served`): the certified saving is
its net token saving on the calibration half, the realised saving and the
signed EM drop (full EM minus served EM) are measured on the test half. Token
savings are net of probe tokens, with the file's probe cost (0: the file does
not record it) and with ``--probe-tokens`` per probe (the capture decoded up to
6 tokens per trial answer). Pure computation: no services.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import Report, add_json_argument

from pipeline.optimizer import PolicySpec, load_spec, min_certifiable_samples, parse_spec
from pipeline.optimizer.anytime import BettingState
from pipeline.optimizer.certify import certificate_delta
from pipeline.optimizer.ltt import signed_p_value
from pipeline.optimizer.offline import (
    calibrate,
    calibration_spec,
    leaf_key,
    samples_from_records,
    served,
)
from schemas.trajectory import TrajectoryRecord, segment_from_key

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).resolve().parents[1] / "data/real/real_trajectories_sample.jsonl"
METHODS = ("anytime", "ltt", "signed", "signed+m")
CANDIDATES = (8, 16, 32)
"""``signed+m``: one-look signed, each segment choosing ``min_tokens`` among these."""


def method_spec(base: PolicySpec, method: str) -> PolicySpec:
    """The spec with the named certification: ``anytime`` (as shipped), plain one-look
    ``ltt`` (one-sided loss) or one-look ``signed`` (what ``pipeline calibrate`` runs)."""
    data = base.model_dump(mode="json")
    if method == "ltt":
        data["risk"] = {**data["risk"], "method": "ltt", "loss": "one_sided"}
    elif method in ("signed", "signed+m"):
        data["risk"] = {**data["risk"], "method": "ltt", "loss": "signed"}
    else:
        data["risk"] = {**data["risk"], "method": "anytime", "loss": "signed"}
    return parse_spec(data, source=f"{base.name} ({method})")


def halves(
    records: Sequence[TrajectoryRecord], rng: np.random.Generator
) -> tuple[list[TrajectoryRecord], list[TrajectoryRecord]]:
    """A random 50/50 split within each segment, file order kept inside each half."""
    by_key: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_key.setdefault(leaf_key(record), []).append(i)
    chosen: set[int] = set()
    for rows in by_key.values():
        chosen |= {int(i) for i in rng.permutation(rows)[: len(rows) // 2]}
    calib = [r for i, r in enumerate(records) if i in chosen]
    test = [r for i, r in enumerate(records) if i not in chosen]
    return calib, test


def run(
    path: Path = SAMPLE,
    *,
    splits: int = 20,
    seed: int = 0,
    epsilons: Sequence[float] = (0.10, 0.05),
    delta: float = 0.1,
    probe_tokens: Sequence[int | None] = (None, 6),
    min_samples: int = 30,
) -> dict[str, Any]:
    """Measure both certifications on ``splits`` random halves; the bench contract's JSON.

    ``probe_tokens``: None keeps each record's own probe cost; a number replaces it.
    The result also has ``rows``: one per (method, epsilon, probe cost) with the means.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [TrajectoryRecord.from_line(line) for line in lines if line.strip()]
    base = load_spec(ROOT / "policies" / "earlystop.yaml")
    rows: list[dict[str, Any]] = []
    for probes in probe_tokens:
        data = records
        if probes is not None:
            data = [r.model_copy(update={"probe_tokens": probes}) for r in records]
        for epsilon in epsilons:
            for method in METHODS:
                spec = calibration_spec(
                    method_spec(base, method), epsilon=epsilon, delta=delta, min_samples=min_samples
                )
                rows.append(_measure(spec, data, splits, seed, method, epsilon, probes))
    return _report(rows, path, len(records), splits, delta, min_samples) | {"rows": rows}


def _measure(
    spec: PolicySpec,
    records: list[TrajectoryRecord],
    splits: int,
    seed: int,
    method: str,
    epsilon: float,
    probes: int | None,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)  # the same splits for every method and epsilon
    certified, calib_saving, test_saving, test_drop = [], [], [], []
    for _ in range(splits):
        calib, test = halves(records, rng)
        samples = samples_from_records(calib)
        candidates = CANDIDATES if method == "signed+m" else ()
        body = calibrate(spec, samples, min_tokens=candidates).body
        rules = [body.policy_for(segment_from_key(key)) for key in samples.batches]
        certified.append(any(p.thresholds["normal"] < 1.0 for p in rules))
        calib_saving.append(served(body, samples, "normal").saving)
        replay = served(body, samples_from_records(test), "normal")
        test_saving.append(replay.saving)
        test_drop.append(replay.em_drop)
    return {
        "method": method,
        "epsilon": epsilon,
        "probe_tokens": "file" if probes is None else probes,
        "splits": splits,
        "certified_share": sum(certified) / splits,
        "certified_saving": statistics.fmean(calib_saving),
        "realised_saving": statistics.fmean(test_saving),
        "test_em_drop": statistics.fmean(test_drop),
        "test_em_drop_max": max(test_drop),
        "over_epsilon": sum(d > epsilon for d in test_drop),
        "loss_free_samples": loss_free_samples(
            spec, len(CANDIDATES) if method == "signed+m" else 1
        ),
    }


def loss_free_samples(spec: PolicySpec, chains: int = 1) -> int:
    """Fewest samples, all without a loss, with which the spec's method certifies anything
    (``chains``: tests of min_tokens candidates sharing delta)."""
    epsilon, delta = spec.load_modes.normal.epsilon, spec.risk.delta
    if spec.risk.method == "ltt" and spec.risk.loss == "signed" and chains > 1:
        delta /= chains
    if spec.risk.method == "ltt" and spec.risk.loss == "signed":
        n = 1
        while signed_p_value(np.array([0]), np.array([0]), n, epsilon)[0] > delta:
            n += 1
        return n
    if spec.risk.method == "ltt":
        return min_certifiable_samples(epsilon, delta)  # split none: delta per test
    lower = -1.0 if spec.risk.loss == "signed" else 0.0
    start = BettingState.start(1, epsilon=epsilon, delta=certificate_delta(spec, 1), lower=lower)
    return int(start.update(np.zeros((100_000, 1))).crossed_at[0])


def _report(
    rows: list[dict[str, Any]],
    path: Path,
    records: int,
    splits: int,
    delta: float,
    min_samples: int,
) -> dict[str, Any]:
    rep = Report(
        "Cold start: offline calibration on real trajectories",
        f".venv/bin/python bench/bench_calibrate.py --splits {splits}",
    )
    for row in rows:
        probes = row["probe_tokens"]
        where = f"{row['method']}, eps {row['epsilon']:g}, probe {probes}"
        rep.add(
            f"{where}: certified saving (calibration half)",
            100 * row["certified_saving"],
            "%",
            detail=(
                f"a rule stops early in {row['certified_share']:.0%} of {splits} splits; "
                f"certifying anything takes {row['loss_free_samples']} loss-free samples"
            ),
        )
        rep.add(f"{where}: realised saving (test half)", 100 * row["realised_saving"], "%")
        rep.add(
            f"{where}: EM drop (test half), mean",
            row["test_em_drop"],
            "",
            detail=(
                f"max {row['test_em_drop_max']:+.3f}; {row['over_epsilon']} of {splits} "
                "halves above epsilon"
            ),
        )
    rep.notes.append(
        f"{path.name}: {records} requests, split {splits} times at random into halves within "
        f"each segment (seeded); delta {delta:g} per certificate, min_samples {min_samples}, "
        "one epsilon in every load mode, no step limit. Savings are net of probe tokens "
        "('file': the file's own probe cost, which it leaves at 0)."
    )
    half = records // 2
    needs = sorted({(r["method"], r["epsilon"], r["loss_free_samples"]) for r in rows})
    shown = ", ".join(f"{m} at eps {e:g}: {n}" for m, e, n in needs)
    rep.notes.append(
        f"Certifying anything takes at least this many samples, all loss-free ({shown}); a "
        f"calibration half has {half}. The anytime certificate pays for being valid at every "
        "look (and its first epoch runs at delta/2), which a one-off offline calibration "
        "does not need."
    )
    rep.notes.append(
        f"min_samples {min_samples}: with 15 samples per segment in a half, any value from 16 "
        "to 45 pools every segment into the global population (45) for both methods; with "
        "less, LTT tests each segment on its own 15 samples and certifies nothing."
    )
    rep.notes.append(
        f"The test half's EM drop is the mean of {records - half} requests, a noisy estimate: "
        "the promise is about means (P(mean EM drop > epsilon) <= delta), not one half."
    )
    return rep.to_json()


def print_rows(rows: list[dict[str, Any]]) -> None:
    """The measurement as one table."""
    head = f"{'method':8} {'eps':>5} {'probe':>5} {'stops':>6} {'cert. saving':>12}"
    print(f"{head} {'real. saving':>12} {'test EM drop':>12} {'max':>7} {'>eps':>5} {'n0':>4}")
    for r in rows:
        print(
            f"{r['method']:8} {r['epsilon']:5.2f} {r['probe_tokens']!s:>5} "
            f"{r['certified_share']:6.0%} {r['certified_saving']:12.1%} "
            f"{r['realised_saving']:12.1%} {r['test_em_drop']:+12.3f} "
            f"{r['test_em_drop_max']:+7.3f} {r['over_epsilon']:5d} {r['loss_free_samples']:4d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--file", type=Path, default=SAMPLE, help="trajectory file")
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.10, 0.05])
    parser.add_argument("--probe-tokens", type=int, default=6, help="tokens per probe, 2nd run")
    parser.add_argument("--min-samples", type=int, default=30, help="see the module doc")
    parser.add_argument("--quick", action="store_true", help="5 splits")
    add_json_argument(parser)
    args = parser.parse_args()
    result = run(
        args.file,
        splits=5 if args.quick else args.splits,
        seed=args.seed,
        epsilons=args.epsilons,
        delta=args.delta,
        probe_tokens=(None, args.probe_tokens),
        min_samples=args.min_samples,
    )
    print_rows(result["rows"])
    print("\n" + "\n".join(result["notes"]))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
