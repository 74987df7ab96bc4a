"""The joiner's writes through Faust, against a fake app: order, partitions, failed deliveries."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pipeline.stream.faust_io import Sender, TableStore


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
