"""The join state's byte format, batches through the processor, and the decoded-state cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stream import join
from pipeline.stream.errors import JoinStateError
from pipeline.stream.metrics import Metrics
from pipeline.stream.processor import DictStore, InputRecord, Processor
from pipeline.stream.state import JoinState, _LegacyJoinState
from pipeline.stream.store import StateCache
from schemas import Outcome
from tests.unit.test_stream_join import event, feedback, label
from tests.unit.test_stream_processor import deliveries, record

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def joined_state() -> JoinState:
    raw = event("r").to_bytes().replace(b'{"schema_version"', b'{ "schema_version"')
    state = join.on_event(None, event("r"), shard=4, now=NOW, raw=raw).state
    state = join.on_label(state, label("r"), shard=4, now=NOW).state
    return join.on_feedback(state, feedback("r", 0, -1), shard=4, now=NOW).state


def test_a_state_survives_its_bytes_and_keeps_the_input_bytes_as_they_came() -> None:
    state = joined_state()
    data = state.to_bytes()
    assert data.startswith(b'{"shard":4,"first_seen":') and b'\n{ "schema_version"' in data
    back = JoinState.from_bytes(data)
    assert back == state and back.event_raw == state.event_raw
    assert back.to_bytes() == data


def test_states_in_the_first_format_are_still_read() -> None:
    state = joined_state()
    fields = {name: getattr(state, name) for name in _LegacyJoinState.model_fields}
    old = _LegacyJoinState(**fields).model_dump_json().encode()
    assert b"\n" not in old
    assert JoinState.from_bytes(old) == state


@pytest.mark.parametrize(
    "data",
    [
        b"not a state",
        b'{"shard":1,"first_seen":2.0,"v":2,"event_ids":[],"label_ids":[],"feedback":[],'
        b'"event":5,"label":0}\n{}',  # the body is shorter than the header says
        b'{"shard":1,"first_seen":2.0,"v":9,"event_ids":[],"label_ids":[],"feedback":[],'
        b'"event":0,"label":0}\n',  # a format this code does not know
        b'{"shard":1,"first_seen":2.0,"v":2,"event_ids":[],"label_ids":[],"feedback":[],'
        b'"event":2,"label":0}\n{}',  # an event that breaks its contract
    ],
)
def test_unreadable_states_raise_one_clear_error(data: bytes) -> None:
    with pytest.raises(JoinStateError, match="a stored join state cannot be read"):
        JoinState.from_bytes(data)


def test_a_batch_writes_each_changed_key_once() -> None:
    writes: list[tuple[str, int]] = []

    class CountingStore(DictStore):
        def put(self, key: str, value: bytes, shard: int) -> None:
            writes.append((key, shard))
            super().put(key, value, shard)

    metrics = Metrics()
    processor = Processor(CountingStore(), "w1", metrics)
    batch = [record(m, offset=i, partition=2) for i, m in enumerate(
        [event("a"), label("a"), feedback("a", 0, 1), event("b"), event("a")]
    )]  # fmt: skip
    out = processor.process_batch(batch, NOW)
    assert sorted(writes) == [("a", 2), ("b", 2)]
    assert [o.version for o in out.outcomes] == [2, 3]
    assert metrics.get("stream_join_steps_total", input="inference-events", result="duplicate") == 1
    assert metrics.get("stream_records_total", topic="inference-events") == 3


def final(records: list[InputRecord], size: int) -> tuple[dict[str, Outcome], dict[str, bytes]]:
    store = DictStore()
    processor = Processor(store, "w1", cache_entries=2)  # a small cache: misses too
    last: dict[str, Outcome] = {}
    for i in range(0, len(records), size):
        for outcome in processor.process_batch(records[i : i + size], NOW).outcomes:
            last[outcome.request_id] = outcome
    states = {key: JoinState.from_bytes(raw).to_bytes() for key, raw in store.data.items()}
    return {k: v.model_copy(update={"joined_at": NOW}) for k, v in last.items()}, states


@settings(max_examples=100, deadline=None)
@given(deliveries(), st.integers(1, 8))
def test_batching_never_changes_the_last_outcome_or_the_state(
    delivery: tuple[list[InputRecord], list[InputRecord]], size: int
) -> None:
    _, delivered = delivery
    assert final(delivered, size) == final(delivered, 1)


def test_the_cache_never_serves_a_state_the_store_no_longer_holds() -> None:
    store = DictStore()
    processor = Processor(store, "w1")
    processor.process(record(event("r")), NOW)
    # The table changes behind the processor's back (a changelog recovery).
    replaced = join.on_label(None, label("r"), shard=0, now=NOW).state
    store.data["r"] = replaced.to_bytes()
    result = processor.process(record(event("r")), NOW)
    assert result.outcome is not None and result.outcome.version == 2
    del store.data["r"]
    assert processor.process(record(label("r")), NOW).outcome is None


def test_the_cache_is_bounded_and_drops_the_oldest() -> None:
    cache = StateCache(2)
    states = {k: JoinState(shard=0, first_seen=float(i)) for i, k in enumerate("abc")}
    for key, state in states.items():
        cache.remember(key, state.to_bytes(), state)
    assert len(cache) == 2
    assert cache.load("c", states["c"].to_bytes()) is states["c"]
    assert cache.load("a", states["a"].to_bytes()) == states["a"]  # decoded again
    assert len(StateCache(0)) == 0


def test_expiry_drops_expired_states_from_the_cache() -> None:
    store = DictStore()
    processor = Processor(store, "w1")
    processor.process(record(event("r")), NOW)
    assert [o.request_id for o in processor.expire(NOW + timedelta(hours=2), 60.0)] == ["r"]
    assert len(processor.cache) == 0 and store.data == {}
