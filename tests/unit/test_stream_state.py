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
from pipeline.stream.state import JoinState, _LegacyJoinState, event_view, label_view
from pipeline.stream.store import StateCache
from schemas import Outcome
from tests.unit.test_stream_join import event, feedback, label
from tests.unit.test_stream_processor import deliveries, record

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


LABEL_RAW = label("r").to_bytes().replace(b'{"schema_version"', b'{ "schema_version"')


def joined_state() -> JoinState:
    state = join.on_event(None, event_view(event("r")), shard=4, now=NOW).state
    state = join.on_label(state, label_view(label("r"), LABEL_RAW), shard=4, now=NOW).state
    return join.on_feedback(state, "r-f0", -1, shard=4, now=NOW).state


def test_a_state_survives_its_bytes_and_keeps_the_label_bytes_as_they_came() -> None:
    state = joined_state()
    data = state.to_bytes()
    assert data.startswith(b'{"shard":4,"first_seen":') and b'"v":2' in data
    assert data.endswith(b"\n" + event("r").to_bytes() + LABEL_RAW)
    back = JoinState.from_bytes(data)
    assert back == state and back.label is not None and back.label.json == LABEL_RAW
    assert back.to_bytes() == data


def test_states_written_by_earlier_code_are_read_with_the_event_made_canonical() -> None:
    # Earlier code kept the event's JSON as it arrived: another producer's spacing.
    state = joined_state()
    raw = event("r").to_bytes().replace(b'{"schema_version"', b'{ "schema_version"')
    head = (
        b'{"shard":4,"first_seen":%r,"v":2,"event_ids":["r-e0"],"label_ids":["r-l0"],'
        b'"feedback":[["r-f0",-1]],"event":%d,"label":%d}\n'
    ) % (state.first_seen, len(raw), len(LABEL_RAW))
    back = JoinState.from_bytes(head + raw + LABEL_RAW)
    assert back == state and back.event is not None
    assert back.event.json == event("r").to_bytes()


def test_states_in_the_first_format_are_still_read() -> None:
    state = joined_state()
    old = _LegacyJoinState(
        shard=state.shard, first_seen=state.first_seen, event=event("r"), label=label("r"),
        event_ids=state.event_ids, label_ids=state.label_ids, feedback=state.feedback,
    ).model_dump_json().encode()  # fmt: skip
    assert b"\n" not in old
    back = JoinState.from_bytes(old)
    assert back._replace(label=None) == state._replace(label=None)
    assert back.label == label_view(label("r"))  # the label's bytes: its canonical JSON


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
    assert [Outcome.from_bytes(o.value).version for o in out.outcomes] == [2, 3]
    assert metrics.get("stream_join_steps_total", input="inference-events", result="duplicate") == 1
    assert metrics.get("stream_records_total", topic="inference-events") == 3


def final(records: list[InputRecord], size: int) -> tuple[dict[str, Outcome], dict[str, bytes]]:
    store = DictStore()
    processor = Processor(store, "w1", cache_entries=2)  # a small cache: misses too
    last: dict[str, Outcome] = {}
    for i in range(0, len(records), size):
        for record_ in processor.process_batch(records[i : i + size], NOW).outcomes:
            outcome = Outcome.from_bytes(record_.value)
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
    replaced = join.on_label(None, label_view(label("r")), shard=0, now=NOW).state
    store.data["r"] = replaced.to_bytes()
    result = processor.process(record(event("r")), NOW)
    assert result.outcome is not None and Outcome.from_bytes(result.outcome.value).version == 2
    del store.data["r"]
    assert processor.process(record(label("r")), NOW).outcome is None


def test_the_cache_is_bounded_and_drops_the_oldest() -> None:
    cache = StateCache(2)
    states = {k: JoinState(0, float(i)) for i, k in enumerate("abc")}
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
    assert [o.key for o in processor.expire(NOW + timedelta(hours=2), 60.0)] == [b"r"]
    assert len(processor.cache) == 0 and store.data == {}
