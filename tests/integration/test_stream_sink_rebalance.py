"""A second sink joins the group mid-stream: the old owner hands over, nothing is written twice."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.config import Settings
from pipeline.stream.metrics import Metrics
from pipeline.stream.writer import ClickHouseWriter, SinkBatch
from pipeline.warehouse.client import connect
from tests.integration.test_stream_sink import (
    committed,
    count,
    outcomes,
    produce,
    run_sink,
    wait_for,
)

pytestmark = pytest.mark.integration


class SlowWriter(ClickHouseWriter):
    """The real writer, a little slow, so a batch is in flight when the group rebalances."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        super().__init__(lambda: connect(settings), metrics)

    def write(self, batch: SinkBatch) -> dict[str, int]:
        time.sleep(0.1)
        return super().write(batch)


def test_a_rebalance_moves_partitions_without_writing_a_row_twice(isolated: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    first_metrics, second_metrics = Metrics(), Metrics()
    first = run_sink(isolated, SlowWriter(isolated, first_metrics), first_metrics)
    produce(isolated, outcomes(tag, 300))
    wait_for(lambda: 0 < count(isolated, tag))
    second = run_sink(isolated, SlowWriter(isolated, second_metrics), second_metrics)
    # Its lag gauges appear once it owns partitions (the group has rebalanced).
    wait_for(lambda: "stream_consumer_lag{" in second_metrics.render(), 60)
    produce(isolated, outcomes(f"{tag}b", 300))
    wait_for(lambda: count(isolated, tag) + count(isolated, f"{tag}b") >= 600, 60)
    wait_for(lambda: second_metrics.total("sink_rows_total") > 0, 60)  # it took partitions over
    wait_for(lambda: committed(isolated) == 600, 60)
    for stop, thread, errors in (first, second):
        stop.set()
        thread.join(30)
        assert errors == [] and not thread.is_alive()
    # Every outcome row once, without FINAL: no batch was written by both owners.
    assert count(isolated, tag) == 300 and count(isolated, f"{tag}b") == 300
    written = first_metrics.get("sink_rows_total", table="outcomes") + second_metrics.get(
        "sink_rows_total", table="outcomes"
    )
    assert written == 600
