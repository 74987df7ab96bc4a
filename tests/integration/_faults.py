"""What the fault tests share: worker processes to kill, traffic, and counts after dedup.

``bench/bench_soak.py`` imports ``Traffic``, ``WorkerProcess``, ``joiner_lag``,
``outcome_counts``, ``sink_lag``, ``tenant_name`` and ``with_stream`` from here.

The worker runs as a real ``pipeline worker`` process (``python -m pipeline.cli
worker``), so SIGKILL kills it the way an OOM killer or a lost machine would:
no flush, no commit, no goodbye to the consumer groups. Its ``/metrics`` tell
the tests how far it got. Traffic goes in the way production sends it:
inference events through the node SDK's :class:`~pipeline.node.Emitter`,
labels through an idempotent producer keyed by request id.

Counts are read back after dedup: ``outcomes FINAL`` (ReplacingMergeTree on
version), ``uniqExact(request_id)``, and the raw rows per ``(request_id,
version)`` so that a duplicate row the merge would hide is still caught.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from pipeline.config import Settings, settings_env
from pipeline.node import Emitter, EmitterSettings
from pipeline.stream.config import StreamSettings
from tests.integration._stream import (
    feedback,
    joiner_lag,
    joiner_lag_detail,
    label_producer,
    make_request,
    sink_lag,
)
from tests.integration.support import (
    eventually,
    free_port,
    http_get,
    parse_metrics,
    query,
)

# Short enough for tests to see batches come and go; the join window is long so
# that a replay after a kill still finds every request open (a duplicate, not
# a new request).
FAULT_STREAM = StreamSettings(
    join_window_s=600.0,
    sweep_interval_s=1.0,
    commit_interval_s=0.5,
    sink_batch_rows=500,
    sink_batch_max_s=0.3,
    sink_retry_initial_s=0.1,
    sink_retry_max_s=2.0,
    shutdown_timeout_s=20.0,
)


def with_stream(settings: Settings, stream: StreamSettings = FAULT_STREAM) -> Settings:
    """The settings with this stream section (it reaches the worker as PIPELINE_STREAM__*)."""
    return settings.model_copy(update={"stream": stream})


# -- the worker as a process -----------------------------------------------------------


@dataclass
class WorkerProcess:
    """One ``pipeline worker`` process with its metrics endpoint and its log file."""

    settings: Settings
    log: Path
    name: str = "worker"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)

    def start(self) -> WorkerProcess:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        self.port = free_port()
        env = {**os.environ, **settings_env(self.settings), **self.extra_env}
        env["PIPELINE_STREAM__WORKER_ID"] = self.name
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.name} at {datetime.now(UTC).isoformat()}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker",
                 "--metrics-port", str(self.port), "--progress-every", "5"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the worker was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self, lines: int = 40) -> str:
        """The last lines of the worker's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.name} log ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def health(self) -> dict[str, Any] | None:
        """``/health`` as JSON (None while nothing answers)."""
        status, body = http_get(self.port, "/health")
        return json.loads(body) if status in {200, 503} and body else None

    def wait_ready(self, timeout_s: float = 120.0) -> WorkerProcess:
        """Wait until ``/health`` says ok (the joiner started, the sink runs)."""

        def probe() -> bool:
            assert self.alive(), f"{self.name} exited during start\n{self.output()}"
            found = self.health()
            return found is not None and found.get("status") == "ok"

        eventually(probe, timeout_s, f"{self.name} to be ready", self.output)
        return self

    def metrics(self) -> dict[str, float]:
        """The current counters (the last ones seen if the process no longer answers)."""
        status, body = http_get(self.port, "/metrics")
        if status == 200:
            self.last_metrics = parse_metrics(body)
        return self.last_metrics

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no leaving the groups."""
        assert self.proc is not None and self.alive(), f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; the exit code (killed if it does not stop in time)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return int(self.proc.returncode)

    def rss_mb(self) -> float:
        """Resident memory of the process now, in MiB (NaN once it has exited)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return float("nan")
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextmanager
def workers(*procs: WorkerProcess) -> Iterator[tuple[WorkerProcess, ...]]:
    """Start the workers; stop whichever still run at the end."""
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


# -- traffic ---------------------------------------------------------------------------


def tenant_name() -> str:
    """A tenant of this test only, so rollups can be read per test."""
    return f"f{uuid.uuid4().hex[:12]}"


@dataclass
class Traffic:
    """Requests sent at a steady rate from a thread: events by the node SDK, labels beside."""

    settings: Settings
    tenant: str
    requests: int
    rate: float
    feedback_share: float = 0.0
    ids: list[str] = field(default_factory=list)
    emitted: int = 0
    label_errors: list[str] = field(default_factory=list)
    emitter_stats: Any = None
    label_pending: int = -1
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._send()
        except BaseException as exc:
            self._error = exc

    def _on_label(self, err: Any, msg: Message) -> None:
        if err is not None:
            self.label_errors.append(str(err))

    def _send(self) -> None:
        emitter = Emitter(
            self.settings.kafka, EmitterSettings(linger_ms=5, delivery_timeout_ms=180_000)
        )
        labels = label_producer(self.settings, on_delivery=self._on_label)
        labels_topic = self.settings.topic("em-labels")
        feedback_topic = self.settings.topic("user-feedback")
        tag = uuid.uuid4().hex[:6]
        began = time.monotonic()
        every = max(1, round(1 / self.feedback_share)) if self.feedback_share else 0
        try:
            for i in range(self.requests):
                rid = f"{self.tenant}-{tag}-{i}"
                event, label = make_request(rid, self.tenant)
                assert emitter.emit(event), "the emitter dropped an event (buffer full)"
                labels.produce(labels_topic, label.to_bytes(), rid)
                if every and i % every == 0:
                    labels.produce(feedback_topic, feedback(rid).to_bytes(), rid)
                self.ids.append(rid)
                self.emitted = i + 1
                labels.poll(0)
                ahead = began + (i + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            self.emitter_stats = emitter.close(timeout=180)
            self.label_pending = labels.flush(180)

    def wait(self, timeout_s: float = 300.0) -> Traffic:
        """Wait until every request was sent and delivered (or given up on)."""
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the traffic did not finish"
        if self._error is not None:
            raise self._error
        return self


def send_requests(settings: Settings, tenant: str, n: int) -> list[str]:
    """``n`` labeled requests sent as fast as the clients go; their request ids."""
    traffic = Traffic(settings, tenant, n, rate=1e9).start().wait()
    assert_delivered(traffic)
    return traffic.ids


def assert_delivered(traffic: Traffic) -> None:
    """Every event and label reached the broker: nothing dropped, failed or left queued."""
    stats = traffic.emitter_stats
    assert (stats.sent, stats.failed, stats.dropped, stats.queued) == (
        traffic.requests, 0, 0, 0
    ), f"emitter {stats}"  # fmt: skip
    assert traffic.label_pending == 0 and traffic.label_errors == [], traffic.label_errors[:3]


# -- reading back ----------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Outcomes of one tenant in ClickHouse, counted every way that matters."""

    final: int
    """Rows of ``outcomes FINAL``: one per request after the merge's dedup."""
    unique: int
    """``uniqExact(request_id)`` over all rows."""
    labeled: int
    """Requests whose latest row is labeled."""
    raw: int
    """Rows before dedup."""
    max_per_version: int
    """The most rows any ``(request_id, version)`` has: 1 unless a row was written twice."""
    rollup_requests: int
    """``sum(requests)`` of the ``outcome_minutes`` view (each request counted once)."""


def outcome_counts(settings: Settings, tenant: str) -> Counts:
    final = query(
        settings,
        "SELECT count(), countIf(labeled) FROM outcomes FINAL WHERE tenant = %(t)s",
        t=tenant,
    )[0]
    raw = query(
        settings,
        "SELECT uniqExact(request_id), count() FROM outcomes WHERE tenant = %(t)s",
        t=tenant,
    )[0]
    per_version = query(
        settings,
        "SELECT max(c) FROM (SELECT count() AS c FROM outcomes WHERE tenant = %(t)s "
        "GROUP BY request_id, version)",
        t=tenant,
    )[0][0]
    rollup = query(
        settings, "SELECT sum(requests) FROM outcome_minutes WHERE tenant = %(t)s", t=tenant
    )[0][0]
    return Counts(
        final=int(final[0]),
        unique=int(raw[0]),
        labeled=int(final[1]),
        raw=int(raw[1]),
        max_per_version=int(per_version or 0),
        rollup_requests=int(rollup or 0),
    )


def assert_exactly_once(settings: Settings, tenant: str, n: int) -> None:
    """Each of the ``n`` requests once: after dedup, before it, and in the rollup."""
    counts = outcome_counts(settings, tenant)
    assert counts.final == n and counts.unique == n and counts.labeled == n, counts
    assert counts.max_per_version == 1, f"a (request_id, version) row was written twice: {counts}"
    assert counts.rollup_requests == n, f"the rollup counts a request twice or not at all: {counts}"


def missing_ids(settings: Settings, tenant: str, ids: list[str]) -> list[str]:
    """The request ids with no outcome row yet."""
    sql = "SELECT DISTINCT request_id FROM outcomes WHERE tenant = %(t)s"
    found = {str(row[0]) for row in query(settings, sql, t=tenant)}
    return [rid for rid in ids if rid not in found]


def wait_for_outcomes(
    settings: Settings,
    tenant: str,
    expected: int,
    timeout_s: float,
    diagnose: Callable[[], str] | None = None,
) -> Counts:
    """Wait until ``expected`` labeled requests of ``tenant`` are in ``outcomes FINAL``."""
    last: list[Counts] = []

    def probe() -> Counts | None:
        counts = outcome_counts(settings, tenant)
        last[:] = [counts]
        return counts if counts.labeled >= expected else None

    def explain() -> str:
        try:
            lags = f"{joiner_lag_detail(settings)}; sink lag {sink_lag(settings)}"
        except Exception as exc:  # a diagnostic must not hide the failure
            lags = f"(lags unavailable: {exc})"
        return f"last counts {last}\n{lags}\n{diagnose() if diagnose else ''}"

    return eventually(
        probe, timeout_s, f"{expected} labeled outcomes of {tenant}", explain, interval_s=1.0
    )


def assert_joiner_commits_reach_the_end(settings: Settings, timeout_s: float = 30) -> None:
    """The joiner group's committed offsets reach the end of every input partition.

    Called after the workers stopped (SIGTERM commits what they acknowledged):
    after a SIGKILL the survivor's commits on the partitions that moved once
    crawled one offset per commit (``faust_io.ignore_offset_gaps``).
    """
    eventually(
        lambda: joiner_lag(settings) == 0,
        timeout_s,
        "the joiner's commits to reach the end of its inputs",
        lambda: joiner_lag_detail(settings),
        interval_s=1.0,
    )
