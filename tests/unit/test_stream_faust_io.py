"""The joiner's writes through Faust, against a fake app: order, partitions, failed deliveries."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pipeline.stream.faust_io import SeekGuard, Sender, TableStore, ignore_offset_gaps


class FakeProducer:
    """Records sends; each returns a future the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: Any, value: Any, partition: Any, *_: Any) -> Any:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class FakeData(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: list[tuple[Any, int]] = []

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted.append((tp, offset))


def fake_table() -> Any:
    topic = SimpleNamespace(get_topic_name=lambda: "app-joins-changelog")
    return SimpleNamespace(data=FakeData(), changelog_topic=topic)


def test_changelog_records_go_out_in_write_order_to_the_given_partition() -> None:
    async def scenario() -> tuple[FakeProducer, Any, list[BaseException]]:
        producer, fatal = FakeProducer(), []
        store = TableStore(fake_table(), Sender(SimpleNamespace(producer=producer), fatal.append))
        store.put("a", b"1", 3)
        store.put("b", b"2", 5)
        store.delete("a", 3)
        assert store.get("b") == b"2" and store.get("a") is None
        assert producer.sent == []  # queued until sent, so a batch can await them
        await asyncio.gather(store.send_changelog(), store.send_changelog())
        meta = SimpleNamespace(topic_partition=("app-joins-changelog", 5), offset=41)
        producer.futures[1].set_result(meta)
        await asyncio.sleep(0)
        return producer, store.table, fatal

    producer, table, fatal = asyncio.run(scenario())
    assert producer.sent == [
        ("app-joins-changelog", b"a", b"1", 3),
        ("app-joins-changelog", b"b", b"2", 5),
        ("app-joins-changelog", b"a", None, 3),
    ]
    assert table.data.persisted == [(("app-joins-changelog", 5), 41)]
    assert fatal == []


def test_a_failed_delivery_is_reported_as_fatal() -> None:
    async def scenario() -> list[BaseException]:
        producer, fatal = FakeProducer(), []
        sender = Sender(SimpleNamespace(producer=producer), fatal.append)
        await sender.send("outcomes", b"k", b"v")
        await sender.send("outcomes", b"k", b"w")
        producer.futures[0].set_exception(RuntimeError("broker gone"))
        producer.futures[1].cancel()  # a stop, not a failure
        await asyncio.sleep(0)
        return fatal

    fatal = asyncio.run(scenario())
    assert [str(exc) for exc in fatal] == ["broker gone"]


class FakeDB(dict[bytes, bytes]):
    def put(self, key: bytes, value: bytes) -> None:
        self[key] = value


class PartitionedData(FakeData):
    """Faust's rocksdb store's shape: a database per partition, no partition without an event."""

    def __init__(self) -> None:
        super().__init__()
        self.dbs: dict[int, FakeDB] = {}
        self._key_index: dict[bytes, int] = {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        msg = "no current event"  # what rocksdb's _set asserts in a batch
        raise AssertionError(msg)

    def _encode_key(self, key: bytes) -> bytes:
        return key

    def _encode_value(self, value: bytes) -> bytes:
        return value

    def _db_for_partition(self, partition: int) -> FakeDB:
        return self.dbs.setdefault(partition, FakeDB())


def test_a_per_partition_store_is_written_in_the_shards_database() -> None:
    table = fake_table()
    table.data = PartitionedData()
    store = TableStore(table, Sender(SimpleNamespace(producer=FakeProducer()), print))
    store.put("a", b"1", 3)
    store.put("b", b"2", 5)
    assert table.data.dbs == {3: {b"a": b"1"}, 5: {b"b": b"2"}}
    assert table.data._key_index == {b"a": 3, b"b": 5}  # noqa: SLF001  # the store's own index


def faust_consumer_after_a_seek_under_a_batch() -> Any:
    """Faust's real consumer bookkeeping, in the state its recovery leaves it in.

    Offsets 88..657 of a partition were handed out and acked before the seek
    back to the committed offset 88; the batch still being handed out goes on
    at 658, which the fetch loop sees as a jump from 88 (what it then calls
    is ``_add_gap(tp, 89, 658)``); 658..700 are acked after.
    """
    from collections import defaultdict

    from faust.transport.drivers.aiokafka import Consumer
    from intervaltree import IntervalTree

    consumer = object.__new__(Consumer)  # only the offset bookkeeping is used
    consumer._gap = defaultdict(IntervalTree)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._committed_offset["tp"] = 88
    for offset in range(88, 701):
        consumer._acked["tp"].append(offset)
        consumer._acked_index["tp"].add(offset)
    return consumer


def commits(consumer: Any, rounds: int) -> list[int]:
    """The offsets Faust's periodic commit would commit in ``rounds`` rounds."""
    done = []
    for _ in range(rounds):
        offset = consumer._new_offset("tp")
        if offset is not None and offset > (consumer._committed_offset["tp"] or 0):
            consumer._committed_offset["tp"] = offset  # as a successful commit does
            done.append(offset)
    return done


def test_faust_alone_commits_one_offset_at_a_time_after_a_seek_under_a_batch() -> None:
    # The bug the joiner works around: if Faust fixes it, this test says so.
    consumer = faust_consumer_after_a_seek_under_a_batch()
    asyncio.run(consumer._add_gap("tp", 89, 658))
    assert commits(consumer, 5) == [90, 91, 92, 93, 94]


def test_without_gaps_the_commit_reaches_the_last_acked_offset_at_once() -> None:
    consumer = faust_consumer_after_a_seek_under_a_batch()
    ignore_offset_gaps(consumer)
    asyncio.run(consumer._add_gap("tp", 89, 658))
    assert commits(consumer, 2) == [701]


def test_the_commit_stops_before_a_record_never_acked() -> None:
    consumer = faust_consumer_after_a_seek_under_a_batch()
    ignore_offset_gaps(consumer)
    consumer._acked["tp"].remove(300)  # handed out but skipped (a stale batch)
    consumer._acked_index["tp"].discard(300)
    asyncio.run(consumer._add_gap("tp", 89, 658))
    assert commits(consumer, 3) == [300]


def test_the_commit_waits_for_the_record_at_the_committed_offset() -> None:
    consumer = faust_consumer_after_a_seek_under_a_batch()
    consumer._acked["tp"].remove(88)
    consumer._acked_index["tp"].discard(88)
    assert commits(consumer, 1) == [701], "Faust alone passes one missing record"
    consumer = faust_consumer_after_a_seek_under_a_batch()
    ignore_offset_gaps(consumer)
    consumer._acked["tp"].remove(88)
    consumer._acked_index["tp"].discard(88)
    assert commits(consumer, 2) == []
    consumer._acked["tp"].append(88)  # handed out again and processed
    assert commits(consumer, 2) == [701]


class FakeTP(tuple[str, int]):
    @property
    def topic(self) -> str:
        return self[0]

    @property
    def partition(self) -> int:
        return self[1]


class FakeFaustConsumer:
    """The parts of Faust's consumer the seek guard wraps, with a scripted fetch."""

    def __init__(self, assignment: list[FakeTP], committed: dict[FakeTP, int]) -> None:
        self._assignment = assignment
        self._committed_offset: dict[FakeTP, int | None] = dict(committed)
        self._gap: dict[FakeTP, list[int]] = {tp: [1] for tp in assignment}
        self._read_offset: dict[FakeTP, int | None] = {tp: 99 for tp in assignment}
        self.batches: list[list[str]] = []
        self.during_fetch: Any = None  # awaited inside the next fetch (a concurrent seek)
        self.seeks = 0
        self.rewound: list[tuple[FakeTP, int]] = []

    def assignment(self) -> list[FakeTP]:
        return self._assignment

    async def earliest_offsets(self, *tps: FakeTP) -> dict[FakeTP, int]:
        return {tp: 3 for tp in tps}

    async def seek(self, tp: FakeTP, offset: int) -> None:
        self.rewound.append((tp, offset))
        self._read_offset[tp] = offset

    async def perform_seek(self) -> None:
        self.seeks += 1

    async def _getmany(self, active_partitions: Any, timeout: float) -> list[str]:
        if self.during_fetch is not None:
            step, self.during_fetch = self.during_fetch, None
            await step
        return self.batches.pop(0)

    async def getmany(self, timeout: float) -> Any:
        for record in await self._getmany(active_partitions=None, timeout=timeout):
            yield record
            await asyncio.sleep(0)  # Faust hands records out one by one


def test_a_batch_fetched_before_a_seek_is_not_handed_out_after_it_but_read_again() -> None:
    async def run() -> None:
        inputs = [FakeTP(("in", 0)), FakeTP(("in", 1))]
        consumer = FakeFaustConsumer(inputs, {inputs[0]: 10, inputs[1]: 20})
        guard = SeekGuard(consumer, {"in"}).install()
        consumer.batches = [["a", "b", "c", "d"], ["a", "b", "c", "d"]]
        out: list[str] = []
        async for record in consumer.getmany(timeout=1.0):
            out.append(record)
            if record == "b":
                await consumer.perform_seek()  # recovery seeks while the batch is handed out
        assert out == ["a", "b"], "records of the old batch were handed out after the seek"
        assert guard.dropped == 2 and consumer.seeks == 2, "no second seek to read them again"
        assert [r async for r in consumer.getmany(timeout=1.0)] == ["a", "b", "c", "d"]
        assert consumer.rewound == [] and consumer._gap == {}

    asyncio.run(run())


def test_a_batch_whose_fetch_overlaps_a_seek_is_dropped_and_read_again() -> None:
    async def run() -> None:
        tp = FakeTP(("in", 0))
        consumer = FakeFaustConsumer([tp], {tp: 10})
        guard = SeekGuard(consumer, {"in"}).install()
        consumer.batches = [["x", "y"], ["x", "y"]]
        consumer.during_fetch = consumer.perform_seek()  # the seek ends during the fetch
        assert [r async for r in consumer.getmany(timeout=1.0)] == []
        assert guard.dropped == 2 and consumer.seeks == 2
        assert [r async for r in consumer.getmany(timeout=1.0)] == ["x", "y"]

    asyncio.run(run())


def test_a_seek_takes_inputs_without_a_committed_offset_back_to_their_beginning() -> None:
    async def run() -> None:
        committed, fresh = FakeTP(("in", 0)), FakeTP(("in", 1))
        changelog = FakeTP(("app-joins-changelog", 1))
        consumer = FakeFaustConsumer([committed, fresh, changelog], {committed: 10})
        SeekGuard(consumer, {"in"}).install()
        await consumer.perform_seek()
        assert consumer.rewound == [(fresh, 3)], "a changelog or committed input was rewound"
        assert consumer._read_offset[committed] == 99

    asyncio.run(run())
