"""A second sink joins the group mid-stream: the old owner hands over, nothing is written twice."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.config import Settings
from pipeline.stream.metrics import Metrics
from pipeline.stream.writer import ClickHouseWriter, SinkBatch
from pipeline.warehouse.client import connect
from tests.integration._stream import (
    count_outcomes,
    produce_outcomes,
    run_sink,
    sink_committed,
    unlabeled_outcomes,
)
from tests.integration.support import eventually

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
    produce_outcomes(isolated, unlabeled_outcomes(tag, 300))
    eventually(lambda: 0 < count_outcomes(isolated, tag), what="the first rows")
    second = run_sink(isolated, SlowWriter(isolated, second_metrics), second_metrics)
    # Its lag gauges appear once it owns partitions (the group has rebalanced).
    eventually(
        lambda: "stream_consumer_lag{" in second_metrics.render(), 60, "the second sink's lag"
    )
    produce_outcomes(isolated, unlabeled_outcomes(f"{tag}b", 300))
    eventually(
        lambda: count_outcomes(isolated, tag) + count_outcomes(isolated, f"{tag}b") >= 600,
        60,
        "600 rows",
    )
    eventually(  # it took partitions over
        lambda: second_metrics.total("sink_rows_total") > 0, 60, "rows from the second sink"
    )
    eventually(lambda: sink_committed(isolated) == 600, 60, "600 offsets committed")
    for run in (first, second):
        run.halt(30)
        assert run.errors == []
    # Every outcome row once, without FINAL: no batch was written by both owners.
    assert count_outcomes(isolated, tag) == 300 and count_outcomes(isolated, f"{tag}b") == 300
    written = first_metrics.get("sink_rows_total", table="outcomes") + second_metrics.get(
        "sink_rows_total", table="outcomes"
    )
    assert written == 600
