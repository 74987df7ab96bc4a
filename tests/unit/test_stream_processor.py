"""Records through the processor: decoding, dead letters, the join on a store, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stream.join import JoinState
from pipeline.stream.metrics import Metrics
from pipeline.stream.processor import DictStore, InputRecord, Processor, Source
from schemas import EMLabel, InferenceEvent, Outcome, UserFeedback
from tests.unit.test_stream_join import event, feedback, label

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SOURCES: dict[type, Source] = {
    InferenceEvent: "inference-events",
    EMLabel: "em-labels",
    UserFeedback: "user-feedback",
}


def record(
    message: InferenceEvent | EMLabel | UserFeedback, offset: int = 0, partition: int = 0
) -> InputRecord:
    source = SOURCES[type(message)]
    return InputRecord(
        source, f"p.{source}", partition, offset, message.request_id.encode(), message.to_bytes()
    )


def test_a_joined_record_yields_an_outcome_and_counts() -> None:
    metrics = Metrics()
    processor = Processor(DictStore(), "w1", metrics)
    assert processor.process(record(event("r")), NOW).outcome is None
    result = processor.process(record(label("r")), NOW)
    assert result.outcome is not None and result.outcome.key == b"r"
    assert Outcome.from_bytes(result.outcome.value).em is True
    assert metrics.get("stream_records_total", topic="em-labels") == 1
    assert metrics.get("stream_join_steps_total", input="em-labels", result="emitted") == 1
    assert metrics.get("stream_outcomes_total", reason="joined") == 1


def test_a_redelivered_input_is_a_duplicate_without_a_second_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics, store = Metrics(), DictStore()
    processor = Processor(store, "w1", metrics)
    first = [record(event("r")), record(label("r"))]
    assert len(processor.process_batch(first, NOW).outcomes) == 1
    before = dict(store.data)
    decoded: list[InputRecord] = []
    monkeypatch.setattr("pipeline.stream.processor.decode", decoded.append)
    again = processor.process_batch([*first, record(event("r"))], NOW)
    assert again.outcomes == [] and again.dead_letters == [] and decoded == []
    assert store.data == before
    for source in ("inference-events", "em-labels"):
        assert metrics.get("stream_join_steps_total", input=source, result="duplicate") >= 1
    # The same bytes under another key are not the kept input's: decoded, and refused.
    moved = record(event("r"))
    moved = InputRecord(moved.source, moved.topic, 0, 9, b"other", moved.value)
    monkeypatch.undo()
    letter = processor.process(moved, NOW).dead_letter
    assert letter is not None and "producers must key" in letter.error


@pytest.mark.parametrize(
    ("value", "key", "kind", "needle"),
    [
        (b"\xff not json", b"r", "decode", "Invalid JSON"),
        (b'{"request_id": "r"}', b"r", "validate", "Field required"),
        (event("r").to_bytes(), b"other", "validate", "producers must key"),
        (event("r").to_bytes(), None, "validate", "producers must key"),
        (None, b"r", "decode", "tombstone"),
    ],
)
def test_bad_records_become_dead_letters(
    value: bytes | None, key: bytes | None, kind: str, needle: str
) -> None:
    metrics = Metrics()
    store = DictStore()
    bad = InputRecord("inference-events", "p.inference-events", 3, 42, key, value)
    result = Processor(store, "w1", metrics).process(bad, NOW)
    letter = result.dead_letter
    assert letter is not None and result.outcome is None
    assert (letter.source_topic, letter.partition, letter.offset) == ("p.inference-events", 3, 42)
    assert (letter.key, letter.raw, letter.error_kind) == (key, value or b"", kind)
    assert needle in letter.error and letter.worker_id == "w1"
    assert store.data == {}
    assert metrics.get("stream_dead_letters_total", topic="inference-events", kind=kind) == 1


def test_expiry_emits_unlabeled_outcomes_and_forgets_foreign_partitions() -> None:
    metrics = Metrics()
    store = DictStore()
    processor = Processor(store, "w1", metrics)
    processor.process(record(event("a"), partition=0), NOW)
    processor.process(record(label("b"), partition=0), NOW)
    processor.process(record(event("c"), partition=1), NOW)
    processor.process(record(event("d"), partition=0), NOW + timedelta(seconds=100))
    later = NOW + timedelta(seconds=60)
    outcomes = [Outcome.from_bytes(o.value) for o in processor.expire(later, 60.0, shards={0})]
    assert [o.request_id for o in outcomes] == ["a"]
    assert outcomes[0].labeled is False
    assert set(store.data) == {"d"}  # b expired as an orphan, c belongs to another worker
    assert metrics.get("stream_orphans_total", kind="orphan_label") == 1
    assert metrics.get("stream_join_entries") == 1


def test_expiry_reads_the_header_it_relies_on() -> None:
    raw = JoinState(7, 1714564800.25).to_bytes()
    assert raw.startswith(b'{"shard":7,"first_seen":1714564800.25,')


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[InputRecord], list[InputRecord]]:
    messages: list[InferenceEvent | EMLabel | UserFeedback] = []
    for r in range(draw(st.integers(1, 3))):
        rid = f"req-{r}"
        messages += [event(rid)] * draw(st.integers(0, 1))
        messages += [label(rid, n) for n in range(draw(st.integers(0, 2)))]
        messages += [feedback(rid, n, -1) for n in range(draw(st.integers(0, 2)))]
    distinct = [record(m, offset=i) for i, m in enumerate(messages)]
    junk = [InputRecord("em-labels", "p.em-labels", 0, 1000 + i, b"x", b"{") for i in range(3)]
    copies = [r for r in distinct + junk for _ in range(draw(st.integers(1, 2)))]
    return distinct, draw(st.permutations(copies))


def final(records: list[InputRecord]) -> dict[str, Outcome]:
    processor = Processor(DictStore(), "w1")
    last: dict[str, Outcome] = {}
    emitted = [processor.process(rec, NOW).outcome for rec in records]
    emitted += processor.expire(NOW + timedelta(hours=1), 60.0)
    for record_ in emitted:
        if record_ is not None:
            outcome = Outcome.from_bytes(record_.value)
            last[outcome.request_id] = outcome
    return {k: v.model_copy(update={"joined_at": NOW}) for k, v in last.items()}


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_records_in_any_order_with_junk_give_the_same_outcomes(
    delivery: tuple[list[InputRecord], list[InputRecord]],
) -> None:
    distinct, delivered = delivery
    assert final(delivered) == final(distinct)
