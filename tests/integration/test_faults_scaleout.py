"""Two workers share the partitions; one is SIGKILLed; the other takes over; nothing lost.

Both are ``pipeline worker`` processes with the same app id, so they split
the six input partitions (the joiner's group) and the outcome partitions
(the sink's group). Traffic flows before, during and after the kill. The
killed worker's partitions move to the survivor once the groups' session
timeouts expire (Faust's 60 s, librdkafka's 45 s): then every request must
be in ClickHouse exactly once, counted after dedup and in the rollup.
"""

from __future__ import annotations

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
    send_requests,
    sink_lag,
    tenant_name,
    wait_for_outcomes,
    with_stream,
    workers,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


def records(worker: WorkerProcess) -> float:
    return worker.metrics().get("stream_records_total", 0.0)


@pytest.mark.slow
def test_a_killed_workers_partitions_move_to_the_other_and_nothing_is_lost(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = with_stream(isolated)
    tenant = tenant_name()
    a = WorkerProcess(settings, tmp_path / "a.log", "w-a")
    b = WorkerProcess(settings, tmp_path / "b.log", "w-b")
    both = lambda: f"{a.output()}\n{b.output()}"  # noqa: E731  # a diagnostic closure
    with workers(a, b):
        a.wait_ready()
        b.wait_ready()
        # Both must own partitions before the kill, or there is nothing to move.
        warmup = send_requests(settings, tenant, 300)
        wait_for_outcomes(settings, tenant, 300, 120, both)
        before_a, before_b = records(a), records(b)
        assert before_a > 0 and before_b > 0, f"the partitions were not shared: {a.last_metrics}"
        assert before_a + before_b >= 600

        traffic = Traffic(settings, tenant, 3000, rate=300).start()
        eventually(lambda: records(b) > before_b + 300, 60, "w-b to take part in the traffic")
        b.kill()
        at_kill = records(a)
        traffic.wait()
        assert_delivered(traffic)
        wait_for_outcomes(settings, tenant, 3300, 240, both)
        eventually(lambda: sink_lag(settings) == 0, 60, "the sink group to commit everything")
        assert a.alive(), a.output()
        # The survivor read the dead one's partitions: more than its own share of the traffic.
        assert records(a) - at_kill > 3000, a.last_metrics
        after = send_requests(settings, tenant, 300)
        wait_for_outcomes(settings, tenant, 3600, 90, a.output)

    assert missing_ids(settings, tenant, warmup + traffic.ids + after) == []
    assert_exactly_once(settings, tenant, 3600)
    assert_joiner_commits_reach_the_end(settings)
