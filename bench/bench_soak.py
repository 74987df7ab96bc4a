"""Soak: a steady rate through node SDK -> worker -> ClickHouse; memory flat, lag bounded.

    .venv/bin/python bench/bench_soak.py                       # 180 s at 200 requests/s
    .venv/bin/python bench/bench_soak.py --duration 600 --rate 300
    .venv/bin/python bench/bench_soak.py --quick               # 60 s
    .venv/bin/python bench/bench_soak.py --stack env           # on the stack PIPELINE_* names

Loopback only, and it stops by itself. Requests (an inference event through
the node SDK's Emitter, a label, and feedback for one in ten) are sent at
``--rate`` for ``--duration`` seconds to a ``pipeline worker`` process. Every
``--sample`` seconds it records the worker's resident memory (``/proc``), the
joiner's and the sink's consumer lag (end offsets minus committed offsets)
and the outcomes in ClickHouse.

Memory is called flat when the least-squares slope of RSS over the second
half of the run is under ``--max-slope`` MiB/min. The join keeps each request
for ``--join-window`` seconds, so RSS grows for one window and then should
level off; the window here is short so the plateau comes within the run.
Lag is bounded when its maximum over the second half is under
``--max-lag-s`` seconds of traffic. Finally every request must be in
``outcomes FINAL`` once.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from _common import Report, add_json_argument, stack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDS_PER_REQUEST = 2.1  # event, label, feedback for one in ten


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; NaN under 3 points."""
    if len(points) < 3:
        return math.nan
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60 if sxx else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stack", choices=["embedded", "env"], default="embedded")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--join-window", type=float, default=30.0, help="seconds")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--max-slope", type=float, default=5.0, help="MiB/min, second half")
    parser.add_argument("--max-lag-s", type=float, default=10.0, help="seconds of traffic")
    parser.add_argument("--quick", action="store_true", help="60 s")
    add_json_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 60.0)

    shown = [".venv/bin/python", "bench/bench_soak.py"]
    for flag in ("stack", "duration", "rate", "join_window"):
        default = parser.get_default(flag)
        if getattr(args, flag) != default:
            shown += [
                f"--{flag.replace('_', '-')}",
                f"{getattr(args, flag):g}"
                if isinstance(default, float)
                else str(getattr(args, flag)),
            ]
    report = Report("Soak", " ".join(shown))
    with stack(args.stack) as settings, tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        run(settings, args, report, Path(tmp))
    print()
    for fig in report.figures:
        verdict = "" if fig.met is None else ("  met" if fig.met else "  NOT MET")
        print(f"{fig.name}: {fig.value:,.3g} {fig.unit}{verdict}  {fig.detail}")
    for note in report.notes:
        print(f"note: {note}")
    report.write(args.json)


def run(settings: object, args: argparse.Namespace, report: Report, tmp: Path) -> None:
    from pipeline.config import Settings
    from pipeline.stream.config import StreamSettings
    from tests.integration._faults import (
        Traffic,
        WorkerProcess,
        joiner_lag,
        outcome_counts,
        sink_lag,
        tenant_name,
        with_stream,
    )

    assert isinstance(settings, Settings)
    stream = StreamSettings(join_window_s=args.join_window, sweep_interval_s=1.0)
    settings = with_stream(settings, stream)
    tenant = tenant_name()
    worker = WorkerProcess(settings, tmp / "worker.log", "w-soak").start()
    try:
        worker.wait_ready(180)
        requests = max(1, round(args.rate * args.duration))
        began = time.monotonic()
        traffic = Traffic(settings, tenant, requests, args.rate, feedback_share=0.1).start()
        samples: list[tuple[float, float, int, int]] = []  # t, rss MiB, joiner lag, sink lag
        while traffic.emitted < requests and worker.alive():
            t = time.monotonic() - began
            samples.append((t, worker.rss_mb(), joiner_lag(settings), sink_lag(settings)))
            print(
                f"  t={t:5.0f} s  sent {traffic.emitted:>7}  rss {samples[-1][1]:6.1f} MiB  "
                f"joiner lag {samples[-1][2]:>6}  sink lag {samples[-1][3]:>6}",
                flush=True,
            )
            time.sleep(max(0.0, args.sample - (time.monotonic() - began - t)))
        traffic.wait(300)
        sent_s = time.monotonic() - began
        deadline = time.monotonic() + 120
        counts = outcome_counts(settings, tenant)
        while counts.labeled < requests and time.monotonic() < deadline and worker.alive():
            time.sleep(1)
            counts = outcome_counts(settings, tenant)
        drained_s = time.monotonic() - began - sent_s
        alive = worker.alive()
        metrics = worker.metrics()
    finally:
        code = worker.stop()

    half = [s for s in samples if s[0] >= sent_s / 2]
    rss_slope = slope_per_min([(t, rss) for t, rss, _, _ in half])
    lag_max = max((lag for _, _, lag, _ in half), default=math.nan)
    sink_max = max((lag for _, _, _, lag in half), default=math.nan)
    lag_slope = slope_per_min([(t, float(lag)) for t, _, lag, _ in half])
    lag_bound = args.max_lag_s * args.rate * RECORDS_PER_REQUEST
    stats = traffic.emitter_stats
    report.add(
        "requests sent",
        requests,
        "requests",
        detail=f"{requests / sent_s:,.0f} requests/s achieved over {sent_s:.0f} s "
        f"(asked {args.rate:g}/s); emitter {stats}",
    )
    report.add("worker RSS, start", samples[0][1] if samples else math.nan, "MiB")
    report.add(
        "worker RSS, end",
        samples[-1][1] if samples else math.nan,
        "MiB",
        detail=f"max {max((s[1] for s in samples), default=math.nan):.1f} MiB",
    )
    report.add(
        "worker RSS slope, second half",
        rss_slope,
        "MiB/min",
        goal=f"< {args.max_slope:g} MiB/min",
        met=bool(rss_slope < args.max_slope),
        detail=f"least squares over {len(half)} samples from t={sent_s / 2:.0f} s",
    )
    report.add(
        "joiner lag, max over the second half",
        lag_max,
        "records",
        goal=f"< {lag_bound:,.0f} ({args.max_lag_s:g} s of traffic)",
        met=bool(lag_max < lag_bound),
        detail=f"slope {lag_slope:+,.0f} records/min",
    )
    report.add(
        "sink lag, max over the second half",
        sink_max,
        "records",
        goal=f"< {lag_bound:,.0f}",
        met=bool(sink_max < lag_bound),
    )
    lost = requests - counts.labeled
    report.add(
        "requests lost",
        lost,
        "requests",
        goal="0",
        met=lost == 0,
        detail=f"labeled outcomes in ClickHouse {counts.labeled} of {requests}, "
        f"drained {drained_s:.0f} s after the last send",
    )
    twice = counts.raw - counts.unique if counts.max_per_version > 1 else 0
    twice = max(twice, counts.final - counts.unique)
    report.add(
        "requests counted twice",
        twice,
        "requests",
        goal="0",
        met=twice == 0,
        detail=f"final {counts.final}, unique {counts.unique}, rollup "
        f"{counts.rollup_requests}, max rows per version {counts.max_per_version}",
    )
    report.add(
        "worker survived",
        1.0 if alive else 0.0,
        "",
        goal="1",
        met=alive,
        detail=f"exit code after SIGTERM {code}; "
        f"sink retries {metrics.get('sink_retries_total', 0):.0f}",
    )
    report.notes += [
        f"{args.duration:g} s at {args.rate:g} requests/s (event through the node SDK Emitter, "
        f"label, feedback for one in ten) into one `pipeline worker` process with its sink; "
        f"join window {args.join_window:g} s, so the join state should plateau after one "
        f"window; samples every {args.sample:g} s of the worker's VmRSS and of consumer lag "
        f"from Kafka offsets (end minus committed).",
        "Memory counts as flat when the least-squares RSS slope over the second half is under "
        "the goal; lag as bounded when its second-half maximum is under the goal.",
    ]


if __name__ == "__main__":
    main()
