"""Scale-out as bench_stream.py measures it: one joiner process against two in one group.

Each worker is the real joiner without its sink (as in ``_stream_worker.run_joiner``),
in a spawned child process of its own, all with the same app id, so two of them
split the input partitions. The workload is produced only once every worker has
started and the group has settled, so the figure leaves the group joins out
and both runs see the same records on topics with the same partitions. While
the joiners run, the broker's CPU time is read from ``/proc`` (every process
in the process group the embedded stack's pid file names), and the whole
machine's from ``/proc/stat``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from _common import Report, rate

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings

SETTLE_S = 15.0
"""Seconds to wait after every worker started, for the group's assignment to settle."""


class ScaleRun(NamedTuple):
    """One run of :func:`scale_run`."""

    records: float
    """Input records/s of all workers together."""
    outcomes: float
    """Joined outcomes/s of all workers together."""
    broker_cores: float
    """CPU seconds the broker took per wall second (1.0 = one core); NaN when not reachable."""
    machine_busy: float
    """Share of all the machine's cores that were busy (0..1)."""
    split: tuple[float, ...]
    """Input records each process joined."""


def _ticks_of_group(pgid: int) -> int:
    """utime + stime, in clock ticks, of every live process in process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; fields[0] is the state (field 3 of stat)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def _machine() -> tuple[int, int]:
    """Busy and total clock ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def broker_pid(settings: Settings) -> int | None:
    """The broker's pid from the embedded stack's pid files; None for a stack not ours."""
    from pipeline.stack.process import ProcessTable

    record = ProcessTable(settings.state_dir / "run").alive("kafka")
    return record.pid if record is not None else None


def scale_run(settings: Settings, workers: int, produce: Callable[[], int]) -> ScaleRun:
    """``workers`` joiner processes in one group over the records ``produce`` sends."""
    context = multiprocessing.get_context("spawn")
    app_id = f"scale-{uuid.uuid4().hex[:6]}"
    counts = [context.Array("d", 2) for _ in range(workers)]
    ready = [context.Event() for _ in range(workers)]
    stop = context.Event()
    children = [
        context.Process(target=_work, args=(settings, app_id, counts[i], ready[i], stop))
        for i in range(workers)
    ]
    for child in children:
        child.start()
    try:
        for event in ready:
            if not event.wait(180):
                msg = "a scale-out worker did not start in time"
                raise SystemExit(msg)
        time.sleep(SETTLE_S)
        total = produce()
        pid = broker_pid(settings)
        ticks = os.sysconf("SC_CLK_TCK")
        broker0 = _ticks_of_group(pid) if pid else 0
        busy0, all0 = _machine()
        start = time.perf_counter()
        records = rate(lambda: sum(c[0] for c in counts), total, 600)
        wall = time.perf_counter() - start
        broker1 = _ticks_of_group(pid) if pid else 0
        busy1, all1 = _machine()
        time.sleep(0.1)  # the children publish their counters every 5 ms
        outcomes = sum(c[1] for c in counts)
        split = tuple(c[0] for c in counts)
    finally:
        stop.set()
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()
    if records is None:
        msg = f"{workers} scale-out worker(s) did not get through the input in time"
        raise SystemExit(msg)
    broker = (broker1 - broker0) / ticks / wall if pid else math.nan
    machine = (busy1 - busy0) / max(1, all1 - all0)
    return ScaleRun(records, records * outcomes / total, broker, machine, split)


def _work(settings: Settings, app_id: str, counts: Any, ready: Any, stop: Any) -> None:
    """A child process: one joiner without its sink, its counters published to ``counts``."""
    from pipeline.stream.runner import Worker

    worker = Worker(settings, StreamSettings(app_id=app_id, sink_enabled=False))
    halt = threading.Event()
    thread = threading.Thread(target=worker.run, args=(halt,), daemon=True)
    thread.start()
    if worker.ready.wait(170):
        ready.set()
    while not stop.is_set():
        counts[0] = worker.metrics.total("stream_records_total")
        counts[1] = worker.metrics.total("stream_outcomes_total")
        stop.wait(0.005)
    halt.set()
    thread.join(60)
    os._exit(0)  # the app's threads are not ours to wait for


SPLIT: dict[int, str] = {}
"""Input records each process joined, as text, by number of processes (filled by the bench)."""


def add_scaleout(rep: Report, med: dict[str, float]) -> None:
    """The scale-out figures of one run (``scale1``/``scale2``, ``broker*``, ``machine*``)."""
    cores = os.cpu_count() or 1

    def cpu(workers: int) -> str:
        broker = med[f"broker{workers}"]
        where = (
            "broker pid not reachable (not our embedded stack)"
            if math.isnan(broker)
            else f"broker (embedded Kafka, its pid file's process group) took "
            f"{broker:.2f} cores = {broker / cores:.0%} of the machine"
        )
        return (
            f"{where}; whole machine {med[f'machine{workers}']:.0%} busy; input records "
            f"per process {SPLIT[workers]}"
        )

    rep.add("scale-out: one joiner process, joined outcomes (one run)", med["scale1"],
            "outcomes/s", detail=cpu(1))  # fmt: skip
    rep.add("scale-out: two joiner processes in one group, joined outcomes (same run)",
            med["scale2"], "outcomes/s", detail=cpu(2))  # fmt: skip
    ratio = med["scale2"] / med["scale1"]
    rep.add("scale-out: two processes / one (issue 19)", ratio, "x", goal="reported",
            met=None, detail=f"on {cores} cores, shared with the broker and the bench")  # fmt: skip
    rep.notes.append(
        f"Scale-out: each joiner (no sink) runs in a process of its own, both with one app "
        f"id, so they split the 6 partitions of each input; the workload is produced after "
        f"every process started and {SETTLE_S:.0f} s more for the group to settle, on fresh "
        f"topics for each figure. Two processes gave {ratio:.2f}x the outcomes/s of one on "
        f"this {cores}-core host, where the broker and the bench share the same cores, so "
        "the ratio is bounded by the machine, not by the worker; the broker's CPU is "
        "utime + stime from /proc of its process group during the measured window."
    )
