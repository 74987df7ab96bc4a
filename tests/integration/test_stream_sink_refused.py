"""A row ClickHouse refuses, on the real broker and warehouse: set apart, the rest written once.

The contract admits nothing the tables refuse (``test_contract_columns.py``),
so the test gives a private warehouse a CHECK constraint that a valid event
breaks (``answer = 'poison'``): the refusal is ClickHouse's own
(VIOLATED_CONSTRAINT), reached through the sink's public input.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipeline.config import Settings
from pipeline.stream.metrics import Metrics
from pipeline.stream.sink import sink_group
from pipeline.stream.writer import ClickHouseWriter, SinkBatch, SinkRecord
from pipeline.warehouse.client import connect
from schemas import DeadLetter
from tests.integration._stream import SINK_STREAM, make_request, run_sink
from tests.integration.support import (
    committed_offsets,
    eventually,
    private_service,
    query,
    read_topic,
)

pytestmark = pytest.mark.integration

POISON = "poison"
COUNT, BAD = 31, 15


@pytest.fixture
def guarded(isolated: Settings, tmp_path: Path) -> Iterator[Settings]:
    """``isolated`` with a warehouse of its own whose events table refuses the poison answer."""
    with private_service(isolated, tmp_path / "warehouse", "clickhouse") as private:
        client = connect(private.settings)
        client.command(
            f"ALTER TABLE inference_events ADD CONSTRAINT no_poison CHECK answer != '{POISON}'"
        )
        client.close()
        yield private.settings


def produce_events(settings: Settings, tag: str) -> list[tuple[str, bytes]]:
    """COUNT valid events on one partition, the BAD-th one poisoned; (request id, bytes) each."""
    producer = Producer(settings.kafka.client_config())
    sent: list[tuple[str, bytes]] = []
    for i in range(COUNT):
        event, _ = make_request(f"{tag}-{i:02d}", tag)
        if i == BAD:
            event = event.model_copy(update={"answer": POISON})
        value = event.to_bytes()
        producer.produce(
            settings.topic("inference-events"), key=event.request_id.encode(), value=value,
            partition=0,
        )  # fmt: skip
        sent.append((event.request_id, value))
    assert producer.flush(30) == 0
    return sent


def stored(settings: Settings, tag: str, final: bool = False) -> list[str]:
    table = "inference_events FINAL" if final else "inference_events"
    sql = f"SELECT request_id FROM {table} WHERE tenant = {{t:String}} ORDER BY request_id"  # noqa: S608
    return [str(row[0]) for row in query(settings, sql, t=tag)]


def letters(settings: Settings) -> list[DeadLetter]:
    return [
        DeadLetter.from_bytes(m.value() or b"") for m in read_topic(settings.kafka, "dead-letters")
    ]


def test_a_refused_row_is_dead_lettered_and_the_rest_written_once(guarded: Settings) -> None:
    tag = f"t{uuid.uuid4().hex[:8]}"
    sent = produce_events(guarded, tag)
    good = sorted(rid for i, (rid, _) in enumerate(sent) if i != BAD)
    metrics = Metrics()
    run = run_sink(guarded, ClickHouseWriter(lambda: connect(guarded), metrics), metrics)
    group = sink_group(guarded, SINK_STREAM)
    eventually(lambda: stored(guarded, tag) == good or None, what="the good rows")
    eventually(
        lambda: committed_offsets(guarded, group, ("inference-events",)) == COUNT or None,
        what="offsets past the refused record",
    )
    [letter] = eventually(lambda: letters(guarded) or None, what="the dead letter")
    assert (letter.source_topic, letter.partition, letter.offset) == (
        guarded.topic("inference-events"),
        0,
        BAD,
    )
    assert letter.error_kind == "warehouse_refused" and letter.raw == sent[BAD][1]
    assert letter.key == sent[BAD][0].encode()
    assert "VIOLATED_CONSTRAINT" in letter.error and "no_poison" in letter.error
    # The sink reads the dead letter back into the warehouse, under its own kind.
    counts_sql = (
        "SELECT error_kind, sum(records) FROM dead_letter_counts "
        "WHERE source_topic = {t:String} GROUP BY error_kind"
    )
    eventually(
        lambda: query(guarded, counts_sql, t=guarded.topic("inference-events")) or None,
        what="the dead letter counted",
    )
    assert query(guarded, counts_sql, t=guarded.topic("inference-events")) == [
        ("warehouse_refused", 1)
    ]
    assert run.thread.is_alive() and run.errors == []
    assert metrics.get("sink_refused_total") == 1
    run.halt(30)
    assert run.errors == []

    # A restart reads nothing again: no row twice, no second dead letter.
    again = run_sink(guarded, ClickHouseWriter(lambda: connect(guarded), metrics), metrics)
    time.sleep(3 * SINK_STREAM.sink_batch_max_s + 1)
    again.halt(30)
    assert again.errors == []
    assert stored(guarded, tag) == good
    assert len(letters(guarded)) == 1


def test_a_replayed_batch_with_a_refused_row_writes_nothing_twice(guarded: Settings) -> None:
    # A crash after the inserts and before the commit: the same records are written again.
    tag = f"t{uuid.uuid4().hex[:8]}"
    sent = produce_events(guarded, tag)
    records = [
        SinkRecord("inference-events", guarded.topic("inference-events"), 0, i, value, rid.encode())
        for i, (rid, value) in enumerate(sent)
    ]
    got: list[DeadLetter] = []
    for _ in range(2):
        writer = ClickHouseWriter(lambda: connect(guarded), dead_letters=got.extend)
        assert writer.write(SinkBatch(list(records))) == {"inference_events": COUNT - 1}
        writer.close()
    good = sorted(rid for i, (rid, _) in enumerate(sent) if i != BAD)
    assert stored(guarded, tag) == good  # block deduplication: before any merge
    assert [letter.offset for letter in got] == [BAD, BAD]  # the topic's table keeps one
