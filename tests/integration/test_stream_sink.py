"""The ClickHouse sink against the real broker and warehouse, with ClickHouse failing on purpose."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from pipeline.config import Settings
from pipeline.stream.metrics import Metrics
from pipeline.stream.writer import ClickHouseWriter, SinkBatch, SinkRecord, TransientWriteError
from pipeline.warehouse import rows
from pipeline.warehouse.client import connect
from schemas import Outcome
from schemas.examples import example_messages
from tests.integration._stream import (
    count_outcomes,
    produce_outcomes,
    run_sink,
    sink_committed,
    unlabeled_outcomes,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


class FlakyWriter(ClickHouseWriter):
    """The real writer, but ClickHouse "is down" while ``down`` is set or failures remain."""

    def __init__(self, settings: Settings, metrics: Metrics, failures: int = 0) -> None:
        super().__init__(lambda: connect(settings), metrics)
        self.failures = failures
        self.down = threading.Event()
        self.calls = 0

    def write(self, batch: SinkBatch) -> dict[str, int]:
        self.calls += 1
        if self.down.is_set() or self.failures > 0:
            self.failures -= 1
            msg = "ClickHouse is down (injected)"
            raise TransientWriteError(msg)
        return super().write(batch)


def test_a_slow_clickhouse_pauses_the_sink_and_nothing_is_lost(isolated: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    metrics = Metrics()
    writer = FlakyWriter(isolated, metrics, failures=5)
    run = run_sink(isolated, writer, metrics)
    items = unlabeled_outcomes(tag, 120)
    produce_outcomes(isolated, items)
    eventually(lambda: metrics.get("sink_paused") == 1, what="the sink to pause")
    eventually(lambda: count_outcomes(isolated, tag) == 120, what="120 rows")
    run.halt(30)
    assert run.errors == []
    assert metrics.get("sink_retries_total") >= 5
    assert metrics.get("sink_paused") == 0
    assert sink_committed(isolated) == 120  # every offset, and only after the rows were in


def test_stopping_during_an_outage_commits_nothing_and_a_restart_writes_it_all(
    isolated: Settings,
) -> None:
    tag = uuid.uuid4().hex[:8]
    metrics = Metrics()
    writer = FlakyWriter(isolated, metrics)
    writer.down.set()
    run = run_sink(isolated, writer, metrics)
    produce_outcomes(isolated, unlabeled_outcomes(tag, 40))
    eventually(lambda: metrics.get("sink_retries_total") >= 3, what="three retries")
    run.halt(30)
    assert run.errors == []
    assert count_outcomes(isolated, tag) == 0 and sink_committed(isolated) == 0

    metrics = Metrics()
    run = run_sink(isolated, FlakyWriter(isolated, metrics), metrics)
    eventually(lambda: count_outcomes(isolated, tag) == 40, what="40 rows")
    run.halt(30)
    assert run.errors == [] and sink_committed(isolated) == 40


def test_the_stored_contribution_equals_the_one_computed_in_python(isolated: Settings) -> None:
    example = example_messages()["outcome"]
    assert isinstance(example, Outcome)
    rid = f"sink-contrib-{uuid.uuid4().hex[:8]}"
    event = example.event.model_copy(
        update={"request_id": rid, "ts": datetime(2024, 5, 1, 12, 7, 59, 999000, UTC)}
    )
    item = example.model_copy(update={"request_id": rid, "event": event})
    writer = ClickHouseWriter(lambda: connect(isolated))
    record = SinkRecord("outcomes", isolated.topic("outcomes"), 0, 0, item.to_bytes())
    assert writer.write(SinkBatch([record]))["outcomes"] == 1
    client = connect(isolated)
    try:
        sql = f"SELECT {rows.CONTRIBUTION_SQL} FROM outcomes WHERE request_id = %(r)s"  # noqa: S608  # a constant expression
        stored = client.query(sql, parameters={"r": rid}).result_rows[0][0]
    finally:
        client.close()
        writer.close()
    assert tuple(stored) == rows.contribution(item)
