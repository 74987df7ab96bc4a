"""The worker killed, ClickHouse taken away, a short soak: every outcome lands exactly once.

The worker runs as a real ``pipeline worker`` process (see ``_faults.py``).
After SIGKILL its consumer groups still hold its partitions until their
session timeouts pass (Faust's 60 s, librdkafka's 45 s for the sink), so a
restart takes about a minute to resume: these tests are marked slow.

ClickHouse unavailable: ``test_stream_sink.py`` already proves the sink's
backoff, pause and commit-after-insert against an injected writer failure
(``test_a_slow_clickhouse_pauses_the_sink_and_nothing_is_lost``,
``test_stopping_during_an_outage_commits_nothing_and_a_restart_writes_it_all``).
The test here adds the real thing: the warehouse process stopped and started
again under a running worker process, with the joiner consuming throughout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.integration._faults import (
    Traffic,
    WorkerProcess,
    assert_delivered,
    assert_exactly_once,
    assert_joiner_commits_reach_the_end,
    missing_ids,
    outcome_counts,
    send_requests,
    sink_lag,
    tenant_name,
    wait_for_outcomes,
    with_stream,
    workers,
)
from tests.integration.support import PrivateStack, eventually, private_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_lands_every_outcome_exactly_once(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = with_stream(isolated)
    tenant = tenant_name()
    n = 4000
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, log, "w-first")
    second = WorkerProcess(settings, log, "w-second")
    with workers(first):
        first.wait_ready()
        traffic = Traffic(settings, tenant, n, rate=800).start()

        # Kill while records are in flight: some outcomes already written by the
        # sink, the joiner part way through the inputs, traffic still arriving.
        def midway() -> dict[str, float] | None:
            seen = first.metrics()
            joined = seen.get('stream_outcomes_total{reason="joined"}', 0)
            return seen if joined >= n * 0.15 else None

        at_kill = eventually(midway, 90, "the joiner to join some requests", first.output, 0.05)
        first.kill()
        joined = at_kill.get('stream_outcomes_total{reason="joined"}', 0)
        written = at_kill.get('sink_rows_total{table="outcomes"}', 0)
        assert joined < n and written < n, f"the kill came too late to be mid-batch: {at_kill}"
        landed = outcome_counts(settings, tenant).final
        assert landed < n, landed

        with workers(second):
            second.wait_ready(180)
            traffic.wait()
            assert_delivered(traffic)
            wait_for_outcomes(
                settings, tenant, n, 240, lambda: f"{first.output()}\n{second.output()}"
            )
            # After the failover new traffic flows through every partition too.
            later = send_requests(settings, tenant, 600)
            wait_for_outcomes(settings, tenant, n + 600, 120, second.output)
            eventually(lambda: sink_lag(settings) == 0, 60, "the sink to commit everything")
            time.sleep(2)  # room for a late duplicate to show up
            assert second.alive(), second.output()
    assert missing_ids(settings, tenant, traffic.ids + later) == []
    assert_exactly_once(settings, tenant, n + 600)
    assert_joiner_commits_reach_the_end(settings)


@pytest.fixture
def private_warehouse(isolated: Settings, tmp_path: Path) -> Iterator[PrivateStack]:
    """A warehouse of this test only (the session Kafka, a private ClickHouse)."""
    with private_service(isolated, tmp_path / "private", "clickhouse") as private:
        yield private


@pytest.mark.slow
def test_clickhouse_away_pauses_the_sink_and_everything_lands_once_it_is_back(
    private_warehouse: PrivateStack, tmp_path: Path
) -> None:
    settings = with_stream(private_warehouse.settings)
    tenant = tenant_name()
    worker = WorkerProcess(settings, tmp_path / "worker.log", "w-ch")
    with workers(worker):
        worker.wait_ready()
        before = send_requests(settings, tenant, 200)
        wait_for_outcomes(settings, tenant, 200, 60, worker.output)

        private_warehouse.stop("clickhouse")
        during = send_requests(settings, tenant, 600)
        # The joiner goes on consuming and producing outcomes; the sink pauses.
        eventually(
            lambda: worker.metrics().get('stream_outcomes_total{reason="joined"}', 0) >= 800,
            60,
            "the joiner to join every request while ClickHouse is away",
            worker.output,
        )
        eventually(lambda: worker.metrics().get("sink_paused") == 1, 30, "the sink to pause")
        retries = worker.metrics()["sink_retries_total"]
        time.sleep(5)  # stay away a while: backoff, not a busy loop, not a crash
        grown = worker.metrics()["sink_retries_total"] - retries
        assert 0 < grown < 40, f"{grown} retries in 5 s: no backoff"
        assert worker.alive() and worker.health() == {
            "status": "ok", "state": "running", "sink_alive": True,
        }  # fmt: skip
        assert sink_lag(settings) > 0  # nothing committed that is not in ClickHouse

        private_warehouse.start("clickhouse")
        wait_for_outcomes(settings, tenant, 800, 90, worker.output)
        eventually(lambda: worker.metrics().get("sink_paused") == 0, 30, "the sink to resume")
        eventually(lambda: sink_lag(settings) == 0, 60, "the sink to commit everything")
        time.sleep(2)
    assert worker.proc is not None and worker.proc.returncode == 0, worker.output()
    assert missing_ids(settings, tenant, before + during) == []
    assert_exactly_once(settings, tenant, 800)


@pytest.mark.slow
def test_a_short_soak_keeps_memory_flat_and_lag_bounded(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "bench/bench_soak.py", "--stack", "env", "--duration", "30",
         "--rate", "150", "--join-window", "6", "--json", str(out)],
        cwd=ROOT, env=stack_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    figures = {f["name"]: f for f in report["figures"]}
    assert figures["requests lost"]["value"] == 0, figures["requests lost"]
    assert figures["requests counted twice"]["value"] == 0
    slope = figures["worker RSS slope, second half"]
    assert slope["met"] is True, slope
    lag = figures["joiner lag, max over the second half"]
    assert lag["met"] is True, lag
    assert figures["worker RSS, end"]["value"] > 0
    assert report["command"].startswith(".venv/bin/python bench/bench_soak.py")
