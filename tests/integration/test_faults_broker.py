"""The Kafka broker stopped and restarted under traffic: producers buffer, nothing is lost.

The test has its own stack (Kafka and the warehouse in a private state
folder on free ports), so stopping its broker disturbs no other test. Events
go through the node SDK's Emitter and labels through an idempotent producer
at a steady rate; half way the broker is stopped for several seconds and
started again on the same data. The producers hold what they could not
deliver and retry; the worker reconnects, and its log says so in a few lines,
not one per retry. At the end every request sent is an outcome in
ClickHouse, once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration._faults import (
    Traffic,
    WorkerProcess,
    assert_delivered,
    assert_exactly_once,
    missing_ids,
    tenant_name,
    wait_for_outcomes,
    with_stream,
    workers,
)
from tests.integration.support import eventually, private_stack

pytestmark = pytest.mark.integration

DOWN_S = 8.0


@pytest.mark.slow
def test_a_broker_restart_during_traffic_loses_nothing(tmp_path: Path) -> None:
    with private_stack(tmp_path / "stack", {"kafka", "clickhouse"}) as stack:
        settings = with_stream(stack.settings)
        tenant = tenant_name()
        worker = WorkerProcess(settings, tmp_path / "worker.log", "w-broker")
        with workers(worker):
            worker.wait_ready()
            traffic = Traffic(settings, tenant, 3000, rate=150).start()
            eventually(lambda: traffic.emitted >= 600, 60, "traffic to be flowing")
            stack.stop("kafka")
            sent_while_down = traffic.emitted
            time.sleep(DOWN_S)
            assert traffic.emitted > sent_while_down, "emit blocked while the broker was down"
            queued = traffic.emitted - sent_while_down
            stack.start("kafka")
            traffic.wait(300)
            assert_delivered(traffic)  # buffered while away, then delivered: none failed
            assert queued > 0
            wait_for_outcomes(settings, tenant, 3000, 240, worker.output)
            assert worker.alive(), f"the worker died with the broker\n{worker.output()}"
            time.sleep(2)
            # aiokafka logs each of its retries while the broker is away (113,157 lines
            # in one run without the filter); the worker's log keeps one per kind.
            complaints = [
                line for line in worker.log.read_text(errors="replace").splitlines()
                if " aiokafka" in line
            ]  # fmt: skip
            assert 0 < len(complaints) <= 40, "\n".join(complaints[-20:])
        assert missing_ids(settings, tenant, traffic.ids) == []
        assert_exactly_once(settings, tenant, 3000)
