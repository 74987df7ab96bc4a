"""Micro-benchmarks of the node SDK's hot paths.

    .venv/bin/python bench/bench_node.py                   # emitter at an unreachable broker
    .venv/bin/python bench/bench_node.py --broker embedded # starts the embedded stack
    .venv/bin/python bench/bench_node.py --broker 127.0.0.1:9092
    .venv/bin/python bench/bench_node.py --json out.json   # also the figures as JSON

Decision costs are timed in batches (one perf_counter_ns pair per 1,000
calls, loop overhead included for every row alike) and the median batch is
reported per call, next to two baselines measured in the same run: a bare
dict subscript and a one-line function that does the subscript (the floor of
any Python call). Emit costs are timed per call (timer overhead subtracted),
since one emit is microseconds.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import Report, add_json_argument

from pipeline.config import load_settings
from pipeline.node import Controller, Emitter, EmitterSettings, compile_snapshot
from pipeline.node.kafka import KafkaSettings
from schemas import PolicyBody, SegmentPolicy
from schemas.examples import inference_event

BATCH = 1000
BATCHES = 400


def per_call_ns(run_batch: Callable[[], None], batches: int = BATCHES) -> float:
    """Median cost per call of ``run_batch`` (which makes BATCH calls)."""
    for _ in range(20):
        run_batch()  # warm up
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        run_batch()
        samples.append((time.perf_counter_ns() - start) / BATCH)
    return statistics.median(samples)


def controller() -> Controller:
    plain = SegmentPolicy(thresholds={"normal": 0.9, "peak": 0.8}, min_tokens=8, token_budget=512)
    stepped = SegmentPolicy(
        thresholds={"normal": 0.85},
        min_tokens=4,
        token_budget=256,
        schedule=((64, 0.8), (128, 0.75)),
    )
    body = PolicyBody(
        segments={"global": plain, "qa": stepped, "acme/qa/short": stepped},
        exploration_share=0.0,
    )
    return Controller(compile_snapshot(body, policy_name="bench", version=1, source="broker"))


def decision_rows(batches: int = BATCHES) -> list[tuple[str, float]]:
    ctl = controller()
    plain = ctl.begin("req-1", "acme/chat/short")  # resolves to global: no schedule
    stepped = ctl.begin("req-1", "acme/qa/short")  # a two-step schedule
    table = {"acme/qa/short": stepped}
    key = "acme/qa/short"
    should_stop = ctl.should_stop
    ctl.should_stop(key, 100, 0.5)  # memoise the key

    def lookup(k: str) -> object:
        return table[k]

    def bare() -> None:
        for _ in range(BATCH):
            table[key]

    def call() -> None:
        for _ in range(BATCH):
            lookup(key)

    def with_plan() -> None:
        for _ in range(BATCH):
            should_stop(plain, 100, 0.5)

    def with_schedule() -> None:
        for _ in range(BATCH):
            should_stop(stepped, 100, 0.5)

    def with_key() -> None:
        for _ in range(BATCH):
            should_stop(key, 100, 0.5)

    def begin() -> None:
        for i in range(BATCH):
            ctl.begin("req-%d" % i, key)  # noqa: UP031  # cheapest formatting, like a real id

    # Baselines and should_stop interleaved in rounds, so a burst of load on the
    # shared machine hits them alike; each row is the median of its rounds.
    funcs = [
        ("dict lookup d[k] (baseline)", bare),
        ("f(k) doing d[k] (call baseline)", call),
        ("should_stop(plan, t, c)", with_plan),
        ("should_stop(plan, t, c), 2-step schedule", with_schedule),
        ("should_stop('tenant/task/bucket', t, c)", with_key),
        ("begin(request_id, key) (once per request)", begin),
    ]
    rounds = 5
    results: dict[str, list[float]] = {label: [] for label, _ in funcs}
    for _ in range(rounds):
        for label, func in funcs:
            results[label].append(per_call_ns(func, max(1, batches // rounds)))
    return [(label, statistics.median(results[label])) for label, _ in funcs]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def broker(choice: str) -> Iterator[tuple[KafkaSettings, str]]:
    if choice == "unreachable":
        address = f"127.0.0.1:{closed_port()}"
        yield KafkaSettings(bootstrap_servers=address), f"unreachable {address}"
        return
    if choice != "embedded":
        yield KafkaSettings(bootstrap_servers=choice), f"broker at {choice}"
        return
    from pipeline.stack import manager

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            state_dir=Path(tmp),
            kafka={"bootstrap_servers": f"127.0.0.1:{closed_port()}", "topic_prefix": "bench."},
            clickhouse={"url": f"http://127.0.0.1:{closed_port()}"},
            mlflow={"tracking_uri": f"http://127.0.0.1:{closed_port()}"},
            embedded={"kafka_controller_port": closed_port(), "kafka_heap": "512m"},
        )
        manager.up(settings)
        try:
            yield settings.kafka, f"embedded broker {settings.kafka.bootstrap_servers}"
        finally:
            manager.down(settings)


def emit_rows(
    kafka: KafkaSettings, n: int, close_timeout_s: float = 30.0
) -> list[tuple[str, float, float]]:
    event = inference_event()
    payload = event.to_bytes()
    timer = statistics.median(
        [-(time.perf_counter_ns() - time.perf_counter_ns()) for _ in range(10_000)]
    )
    rows = []
    settings = EmitterSettings(max_buffered_messages=4 * n, max_buffered_kbytes=1_048_576)
    with Emitter(
        kafka, settings.model_copy(update={"close_timeout_s": close_timeout_s})
    ) as emitter:
        for label, call in (
            ("emit(event) (serialises)", lambda: emitter.emit(event)),
            ("emit_bytes(request_id, payload)", lambda: emitter.emit_bytes("req-1", payload)),
            ("event.to_bytes() alone", event.to_bytes),
        ):
            for _ in range(1000):
                call()  # warm up
            samples = []
            for _ in range(n):
                start = time.perf_counter_ns()
                call()
                samples.append(time.perf_counter_ns() - start - timer)
            samples.sort()
            rows.append((label, statistics.median(samples), samples[int(len(samples) * 0.99)]))
    stats = emitter.stats()
    rows.append((f"(emitter after close: {stats})", 0.0, 0.0))
    return rows


WHY_NOT_3X = (
    "Why 3x is not met: a three-argument method call alone costs about twice a bare "
    "subscript in CPython, so should_stop sits at about 2x a function that does one dict "
    "lookup (the `x f(k)` ratio); the body is already reduced to attribute reads and "
    "comparisons on a slotted frozen dataclass, with decision.decide inlined. Quieter "
    "runs on 2026-11-22 gave 72-99 ns (2.8-4.3x); the ratio moves with machine load "
    "because the baseline is only a few tens of ns."
)
WHY_EMIT = (
    "Serialisation dominates emit (event.to_bytes() is most of it); emit_bytes is the "
    "path for callers that serialise off the generation thread."
)


def report(
    rows: list[tuple[str, float]], emits: list[tuple[str, float, float]], where: str, quick: bool
) -> Report:
    by = dict(rows)
    base, call_base = rows[0][1], rows[1][1]
    plan = by["should_stop(plan, t, c)"]
    command = ".venv/bin/python bench/bench_node.py" + (" --quick" if quick else "")
    rep = Report("Node SDK hot paths", command)
    rep.add("dict lookup d[k] (baseline)", base, "ns", detail="median of 1,000-call batches")
    rep.add(
        "f(k) doing d[k] (call baseline)", call_base, "ns", detail=f"{call_base / base:.2f}x d[k]"
    )
    rep.add(
        "should_stop(plan, t, c) / d[k]",
        plan / base,
        "x",
        goal="<= 3x",
        met=plan / base <= 3.0,
        detail=f"{plan:.1f} ns; {plan / call_base:.2f}x f(k)",
    )
    rep.add("should_stop(plan, t, c)", plan, "ns", goal="<= 1 us", met=plan <= 1000.0)
    for label in (
        "should_stop(plan, t, c), 2-step schedule",
        "should_stop('tenant/task/bucket', t, c)",
    ):
        rep.add(label, by[label], "ns", detail=f"{by[label] / base:.2f}x d[k]")
    rep.add("begin(request_id, key), once per request", by[rows[5][0]] / 1000, "us")
    for label, median, p99 in emits:
        if not median:
            rep.notes.append(f"Emitter pointed at {where}; {label[1:-1]}.")
            continue
        goal = "<= 10 us" if label.startswith("emit(event)") else None
        rep.add(
            label,
            median / 1000,
            "us",
            goal=goal,
            met=(median <= 10_000) if goal else None,
            detail=f"median per call, p99 {p99 / 1000:.2f} us",
        )
    if plan / base > 3.0:
        rep.notes.append(WHY_NOT_3X)
    rep.notes.append(WHY_EMIT)
    rep.notes.append(
        "Decision costs: one perf_counter_ns pair per 1,000 calls, loop overhead included "
        "in every row alike, the baselines measured in the same rounds; emit costs per call "
        "with the timer's own cost subtracted."
    )
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="unreachable", help="unreachable|embedded|host:port")
    parser.add_argument("--emits", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="fewer batches and emits (a smoke)")
    add_json_argument(parser)
    args = parser.parse_args()
    # The unreachable broker makes the SDK warn (once a minute); keep the table readable.
    logging.basicConfig(level=logging.ERROR)
    batches, emits = (50, 2_000) if args.quick else (BATCHES, args.emits)

    rows = decision_rows(batches)
    base, call_base = rows[0][1], rows[1][1]
    print(f"{'decision path':46} {'median ns':>10} {'x d[k]':>8} {'x f(k)':>8}")
    for label, ns in rows:
        print(f"{label:46} {ns:10.1f} {ns / base:8.2f} {ns / call_base:8.2f}")

    with broker(args.broker) as (kafka, where):
        # At an unreachable broker closing only waits for every event to fail: keep it short.
        close_s = 2.0 if args.broker == "unreachable" else 30.0
        rows3 = emit_rows(kafka, emits, close_s)
    print(f"\nemit, producer pointed at {where}")
    print(f"{'emit path':46} {'median us':>10} {'p99 us':>8}")
    for label, median, p99 in rows3:
        if median:
            print(f"{label:46} {median / 1000:10.2f} {p99 / 1000:8.2f}")
        else:
            print(label)
    report(rows, rows3, where, args.quick).write(args.json)


if __name__ == "__main__":
    main()
