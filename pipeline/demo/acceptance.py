"""The acceptance numbers of a run, honestly computed, or "n/a" with the reason.

Measured over the final third of the traffic (after the drift, once the
controller has had cycles to react): the fleet's token saving against full
generations (exact, from the simulator's counters, which know each
request's full length) and the EM drop (full-generation EM of exploration
requests minus EM of served answers, both from ClickHouse). They are set
beside the ground truth of the drifted traffic at the same tolerance. A trace
run (``DemoConfig.trace``) is set beside the yardsticks of the trace's own
records, and has no drift figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from pipeline.demo.fleet import demo_scenario
from pipeline.demo.run import DemoResult, Sample
from pipeline.demo.truth import Yardstick, trace_yardsticks, yardsticks
from pipeline.sim.oracle import DEFAULT_MIN_TOKENS, ground_truth
from pipeline.sim.scenario import DRIFT_SEGMENT
from pipeline.sim.trace import read_trace

MIN_REQUESTS = 200
MIN_LABELED = 100


@dataclass(frozen=True, slots=True)
class Figure:
    """One acceptance line: name, value (or "n/a: why") and what it is compared with."""

    name: str
    value: str
    against: str
    ok: bool | None = None
    """Whether an acceptance criterion holds (None: a figure with no criterion, or n/a)."""


def _window(
    samples: list[Sample], start_s: float, end_s: float = math.inf
) -> tuple[Sample, Sample] | None:
    inside = [s for s in samples if start_s <= s.t < end_s]
    before = [s for s in samples if s.t < start_s]
    if not inside or not before:
        return None
    return before[-1], inside[-1]


def figures(result: DemoResult, budget: int = 4096) -> list[Figure]:
    """Every acceptance figure of the run."""
    cfg = result.config
    start = cfg.duration_s * 2 / 3
    out: list[Figure] = []
    oracle, static = _yardsticks(result, budget)
    traffic = "trace records" if cfg.trace is not None else "drifted traffic"
    out.append(Figure(f"oracle saving (truth, {traffic})", f"{oracle.token_saving:.1%}",
                      f"EM drop {oracle.em_drop:.4f}, {oracle.detail}"))  # fmt: skip
    out.append(Figure("static single threshold (truth)", f"{static.token_saving:.1%}",
                      f"EM drop {static.em_drop:.4f}, {static.detail}"))  # fmt: skip
    pair = _window(result.samples, start)
    saving = served = None
    if pair is None or pair[1].requests - pair[0].requests < MIN_REQUESTS:
        got = 0 if pair is None else pair[1].requests - pair[0].requests
        why = f"n/a: {got} requests in the final third (< {MIN_REQUESTS})"
        out.append(Figure("fleet token saving (final third)", why, ""))
    else:
        a, b = pair
        full, gen = b.tokens_full - a.tokens_full, b.tokens_generated - a.tokens_generated
        share = (b.exploration - a.exploration) / (b.requests - a.requests)
        saving = 1 - gen / full
        served = saving / (1 - share) if share < 1 else math.nan
        out.append(Figure("fleet token saving (final third)", f"{saving:.1%}",
                          f"all requests, {share:.0%} exploration runs to the end"))  # fmt: skip
        out.append(Figure("served-request saving (estimate)", f"{served:.1%}",
                          "fleet saving / (1 - exploration share)", served > 0))  # fmt: skip
        out += [_ratio("saving vs static baseline", served, static),
                _ratio("saving vs oracle", served, oracle)]  # fmt: skip
    if cfg.trace is not None:
        out.append(_em_drop(result, start, cfg.epsilon))
        out.append(Figure("drift", "n/a: a trace replay has no drift", str(cfg.trace)))
        return out
    out.append(_before_drift(result, budget))
    out.append(_em_drop(result, start, cfg.epsilon))
    out.append(_drift(result, budget))
    return out


def _yardsticks(result: DemoResult, budget: int) -> tuple[Yardstick, Yardstick]:
    """The oracle and static baseline of the run's traffic: the drifted scenario, or the trace."""
    cfg = result.config
    if cfg.trace is None:
        return yardsticks(demo_scenario(cfg), cfg.seed, cfg.epsilon, budget=budget,
                          samples=cfg.truth_samples, at_index=None)  # fmt: skip
    records = [t.record for t in read_trace(cfg.trace).requests]
    min_tokens = DEFAULT_MIN_TOKENS if cfg.min_tokens is None else cfg.min_tokens
    return trace_yardsticks(records, cfg.epsilon, budget=budget, min_tokens=min_tokens)


def _before_drift(result: DemoResult, budget: int) -> Figure:
    """Served-request saving in the quarter before the drift, against that traffic's oracle."""
    cfg = result.config
    name = "served-request saving before the drift"
    pair = _window(result.samples, cfg.drift_at_s / 2, cfg.drift_at_s)
    if pair is None or pair[1].requests - pair[0].requests < MIN_REQUESTS:
        return Figure(name, "n/a: too few requests in the quarter before the drift", "")
    a, b = pair
    saving = 1 - (b.tokens_generated - a.tokens_generated) / (b.tokens_full - a.tokens_full)
    share = (b.exploration - a.exploration) / (b.requests - a.requests)
    served = saving / (1 - share) if share < 1 else math.nan
    oracle, _ = yardsticks(demo_scenario(cfg), cfg.seed, cfg.epsilon, budget=budget,
                           samples=cfg.truth_samples, at_index=0)  # fmt: skip
    ratio = served / oracle.token_saving if oracle.token_saving > 0 else math.nan
    return Figure(name, f"{served:.1%}",
                  f"{ratio:.2f}x the oracle's {oracle.token_saving:.1%} on pre-drift traffic "
                  f"(second quarter of the run)")  # fmt: skip


PUBLISHED = frozenset({"approved", "auto_approved"})


def _drift(result: DemoResult, budget: int) -> Figure:
    """Was the drifted segment made safe again, and within how many optimizer cycles?

    Corrected means: a version approved for production after the drift serves
    the drifted segment (normal load mode) with a threshold at least as strict
    as the oracle's threshold for the drifted traffic (one grid step of slack).
    Cycles are the optimize cycles the controller finished after the drift, up
    to the one that registered that version (from the controller's log).
    """
    cfg = result.config
    scen = demo_scenario(cfg)
    key = scen.drift.segment_key if scen.drift else DRIFT_SEGMENT
    name = "drift corrected (cycles after the drift)"
    truth = {
        when: ground_truth(scen, cfg.seed, cfg.epsilon, samples=cfg.truth_samples,
                           at_index=at, segments=[key], budget=budget,
                           signed=True)[key].threshold
        for when, at in (("before", 0), ("after", None))
    }  # fmt: skip
    oracle = " -> ".join("none" if t is None else f"{t:.2f}" for t in truth.values())
    if result.drift_at is None:
        return Figure(name, "n/a: the fleet never started", f"{key}; oracle {oracle}")
    live = [p for p in result.registry.policies if p.review_state in PUBLISHED and p.created_at]
    before = [p for p in live if p.created_at and p.created_at < result.drift_at]
    after = [p for p in live if p.created_at and p.created_at >= result.drift_at]
    was = before[-1].threshold(key) if before else None
    shown = "default" if was is None else f"{was:.2f}"
    target = truth["after"]
    if target is None:
        return Figure(name, "n/a: the oracle certifies nothing after the drift", key)
    cycles = cycle_times(result.folder / "logs" / "controller.log", result.drift_at)
    for p in after:
        th = p.threshold(key)
        if th is not None and th >= target - 0.01 - 1e-9 and p.created_at is not None:
            waited = (p.created_at - result.drift_at).total_seconds()
            # Cycles that finished after the drift, up to the one that registered p.
            count = sum(1 for t in cycles if t <= p.created_at + timedelta(seconds=1))
            count = max(count, 1)
            verdict = "within two cycles" if count <= 2 else "LATE"
            return Figure(name, f"{count} ({verdict})",
                          f"{key}: {shown} -> {th:.2f} in v{p.version}, {waited:.0f}s after "
                          f"the drift; oracle before -> after {oracle}", count <= 2)  # fmt: skip
    last = after[-1].threshold(key) if after else None
    now = "unchanged" if last is None else f"{last:.2f}"
    return Figure(name, "NOT corrected",
                  f"{key}: {shown} -> {now} over {len(after)} versions after the drift; "
                  f"oracle before -> after {oracle}", False)  # fmt: skip


def cycle_times(log: Path, since: datetime) -> list[datetime]:
    """When each optimize cycle after ``since`` finished, from the controller's log.

    Lines look like ``HH:MM:SS optimize: ...`` (UTC); the date is ``since``'s,
    or the next day's for a time more than 12 hours before it.
    """
    if not log.is_file():
        return []
    found = []
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ")
        if not rest.startswith("optimize:"):
            continue
        try:
            clock = time.fromisoformat(stamp)
        except ValueError:
            continue
        at = datetime.combine(since.date(), clock, tzinfo=UTC)
        if at < since - timedelta(hours=12):
            at += timedelta(days=1)
        if at >= since - timedelta(seconds=1):
            found.append(at)
    return found


def _ratio(name: str, served: float, ref: Yardstick) -> Figure:
    if ref.token_saving <= 0:
        return Figure(name, "n/a: the reference saves nothing", ref.detail)
    return Figure(name, f"{served / ref.token_saving:.2f}x",
                  f"{served:.1%} vs {ref.token_saving:.1%} ({ref.detail})")  # fmt: skip


def _em_drop(result: DemoResult, start_s: float, epsilon: float) -> Figure:
    name = "EM drop, measured (final third)"
    if result.started_at is None:
        return Figure(name, "n/a: the fleet never started", "")
    since = result.started_at + timedelta(seconds=start_s)
    rows = [b for b in result.em if b.t >= since]
    sl, se = sum(b.served_labeled for b in rows), sum(b.served_em for b in rows)
    fl, fe = sum(b.full_labeled for b in rows), sum(b.full_em for b in rows)
    if sl < MIN_LABELED or fl < MIN_LABELED:
        why = f"n/a: {sl} served and {fl} full-generation labels (< {MIN_LABELED} each)"
        return Figure(name, why, f"tolerance {epsilon:g}")
    full, early = fe / fl, se / sl
    drop = full - early
    se_drop = math.sqrt(full * (1 - full) / fl + early * (1 - early) / sl)
    upper = drop + 1.96 * se_drop
    if upper <= epsilon:
        verdict = "within (95% upper bound)"
    elif drop <= epsilon:
        verdict = "point estimate within, 95% interval too wide to confirm;"
    else:
        verdict = "ABOVE"
    return Figure(
        name,
        f"{drop:+.4f} ± {1.96 * se_drop:.4f}",
        f"{verdict} tolerance {epsilon:g}: full EM {full:.3f} (n={fl}), "
        f"served {early:.3f} (n={sl})",
        drop <= epsilon,
    )
