"""The sink's pure parts: batches and tokens, error sorting, row preparation, metrics, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from pydantic import ValidationError

from pipeline.errors import WarehouseError
from pipeline.node.kafka import KafkaSettings
from pipeline.stream.app import faust_credentials
from pipeline.stream.config import StreamSettings
from pipeline.stream.errors import SinkError
from pipeline.stream.metrics import Metrics
from pipeline.stream.writer import (
    ClickHouseWriter,
    SinkBatch,
    SinkRecord,
    TransientWriteError,
    classify,
)
from pipeline.warehouse import rows
from pipeline.warehouse.errors import WarehouseUnreachableError
from schemas import Outcome
from schemas.examples import example_messages

OUTCOME = example_messages()["outcome"]
assert isinstance(OUTCOME, Outcome)


def rec(topic: str, partition: int, offset: int, value: bytes | None = b"x") -> SinkRecord:
    return SinkRecord("outcomes", topic, partition, offset, value)


def test_ranges_and_tokens_depend_on_positions_only() -> None:
    a = SinkBatch([rec("t", 0, 5), rec("t", 1, 2), rec("t", 0, 7), rec("u", 0, 1)])
    b = SinkBatch([rec("u", 0, 1), rec("t", 0, 7), rec("t", 1, 2), rec("t", 0, 5)])
    assert a.ranges() == {("t", 0): (5, 7), ("t", 1): (2, 2), ("u", 0): (1, 1)}
    assert a.token("outcomes") == b.token("outcomes")
    assert a.token("outcomes") != a.token("dead_letters")
    assert a.token("outcomes") != SinkBatch([rec("t", 0, 5)]).token("outcomes")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (OperationalError("connection refused"), TransientWriteError),
        (WarehouseUnreachableError("down"), TransientWriteError),
        (DatabaseError("Code: 241. memory", code=241), TransientWriteError),
        (DatabaseError("Code: 53. Type mismatch", code=53), SinkError),
        (DatabaseError("Code: 516. auth", code=516), SinkError),
        (WarehouseError("refused user"), SinkError),
        (OverflowError("int too big to convert"), SinkError),
    ],
)
def test_errors_are_sorted_into_retry_or_stop(exc: Exception, kind: type) -> None:
    assert isinstance(classify(exc, "the insert"), kind)


class FakeClient:
    """Answers the existing-outcomes lookup from a dict; records inserts."""

    def __init__(self, existing: dict[str, rows.Contribution]) -> None:
        self.existing = existing
        self.inserts: list[tuple[str, list[list[Any]], dict[str, Any]]] = []

    def query(self, sql: str, parameters: dict[str, Any]) -> Any:
        found = [(rid, c) for rid, c in self.existing.items() if rid in parameters["ids"]]
        return type("Result", (), {"result_rows": found})()

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        return type("Context", (), {"table": table, "settings": {}, "data": None})()

    def data_insert(self, context: Any) -> None:
        self.inserts.append((context.table, context.data, dict(context.settings)))
        context.data = None

    def close(self) -> None:
        return


def outcome(version: int, feedback: int = 1) -> Outcome:
    return OUTCOME.model_copy(update={"version": version, "feedback_count": feedback})


def test_prepare_skips_written_versions_and_carries_what_each_row_replaces() -> None:
    stored = rows.contribution(outcome(2))
    client = FakeClient({OUTCOME.request_id: stored})
    records = [
        SinkRecord("outcomes", "o", 0, i, o.to_bytes())
        for i, o in enumerate([outcome(2), outcome(3, 2), outcome(3, 2), outcome(4, 2)])
    ]
    records.append(SinkRecord("outcomes", "o", 0, 9, b"garbage"))
    writer = ClickHouseWriter(lambda: client)
    written = writer.write(SinkBatch(records))
    assert written == {"dead_letters": 1, "trajectory_points": 6, "outcomes": 2}
    table, values, settings = client.inserts[-1]
    assert table == "outcomes"
    prev_index = rows.OUTCOME_COLUMNS.index("prev")
    assert [row[1] for row in values] == [3, 4]
    assert values[0][prev_index] == stored
    assert values[1][prev_index] == rows.contribution(outcome(3, 2))
    assert settings["insert_deduplication_token"].startswith("outcomes:")
    assert [t for t, _, _ in client.inserts] == ["dead_letters", "trajectory_points", "outcomes"]
    letter = dict(zip(rows.DEAD_LETTER_COLUMNS, client.inserts[0][1][0], strict=True))
    assert (letter["source_topic"], letter["offset"], letter["error_kind"]) == ("o", 9, "decode")
    assert letter["raw_head"] == b"garbage" and "Invalid JSON" in letter["error"]


def test_a_retry_inserts_exactly_what_the_first_attempt_prepared() -> None:
    client = FakeClient({})
    batch = SinkBatch([SinkRecord("outcomes", "o", 0, 0, outcome(2).to_bytes())])
    writer = ClickHouseWriter(lambda: client)
    writer.write(batch)
    client.existing[OUTCOME.request_id] = rows.contribution(outcome(2))  # now it is there
    writer.write(batch)  # the same rows and token again: the server drops the duplicate
    assert client.inserts[1] == client.inserts[3]


def test_contribution_floors_to_the_minute_in_utc() -> None:
    event = OUTCOME.event.model_copy(update={"ts": datetime(2024, 5, 1, 12, 7, 59, 999, UTC)})
    got = rows.contribution(OUTCOME.model_copy(update={"event": event}))
    assert got[1] == datetime(2024, 5, 1, 12, 7, tzinfo=UTC)
    assert got[8:10] == (1, 1)


def test_metrics_render_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.inc("sink_rows_total", 1_234_567, table="outcomes")
    metrics.set("sink_paused", 1)
    text = metrics.render()
    assert 'sink_rows_total{table="outcomes"} 1234567\n' in text
    assert "# TYPE sink_rows_total counter" in text and "sink_paused 1\n" in text
    assert metrics.total("sink_rows_total") == 1_234_567


def test_stream_settings_are_validated() -> None:
    assert StreamSettings().effective_worker_id()
    with pytest.raises(ValidationError):
        StreamSettings(join_window_s=0)
    with pytest.raises(ValidationError):
        StreamSettings(store="redis://x")


def test_faust_credentials_follow_the_kafka_security_settings() -> None:
    assert faust_credentials(KafkaSettings()) is None
    sasl = faust_credentials(
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",  # type: ignore[arg-type]  # noqa: S106  # pydantic converts it; not a secret
        )
    )
    assert (sasl.username, sasl.mechanism.value, sasl.ssl_context is not None) == (
        "u", "SCRAM-SHA-512", True,
    )  # fmt: skip
