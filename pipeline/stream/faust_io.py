"""The joiner's writes through Faust: the table as a state store, and producing with checks.

Both send through the app's producer (``app.producer.send``) rather than
Faust's topic and table helpers: those queue every record in a buffer that
a background task drains one by one, and whose flush gives up after 0.1 s,
so "handed to the producer" could not be awaited. Here a batch awaits its
sends, so when its records are acknowledged everything it produced is in the
producer, and the flush Faust makes before each commit covers it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any


class Sender:
    """Sends through the app's producer; a failed delivery is reported to ``on_fatal``."""

    def __init__(self, app: Any, on_fatal: Callable[[BaseException], None]) -> None:
        self.app = app
        self.on_fatal = on_fatal

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer (waits only when its buffer is full)."""
        sent = await self.app.producer.send(topic, key, value, partition, None, None)
        future: asyncio.Future[Any] = asyncio.ensure_future(sent)
        future.add_done_callback(self._check)
        return future

    def _check(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and (exc := future.exception()) is not None:
            self.on_fatal(exc)


class TableStore:
    """A :class:`~pipeline.stream.store.StateStore` over a Faust table of bytes.

    A write changes the table's local store at once and queues its changelog
    record for :meth:`send_changelog`, to the partition given: ``table[k] = v``
    would infer the partition from the event being processed, which a batch
    does not have. For a table without windows that is all ``table[k] = v``
    does, besides a sensor call.
    """

    def __init__(self, table: Any, sender: Sender) -> None:
        self.table = table
        self.sender = sender
        self.topic: str = table.changelog_topic.get_topic_name()
        self._pending: deque[tuple[bytes, bytes | None, int]] = deque()
        self._sending = asyncio.Lock()

    def get(self, key: str) -> bytes | None:
        """The state of ``key``, or None."""
        value: bytes | None = self.table.data.get(key.encode())
        return value

    def put(self, key: str, value: bytes, shard: int) -> None:
        """Store a state and queue its changelog record (a new value: never mutated)."""
        raw_key = key.encode()
        data = self.table.data
        if hasattr(data, "_db_for_partition"):
            # The rocksdb store keeps one database per partition and takes the
            # partition from the event being processed, which a batch has none
            # of (it asserts on it): write to the shard's database as its _set does.
            encoded = data._encode_key(raw_key)  # noqa: SLF001  # see above
            data._key_index[encoded] = shard  # noqa: SLF001
            data._db_for_partition(shard).put(encoded, data._encode_value(value))  # noqa: SLF001
        else:
            data[raw_key] = value
        self._pending.append((raw_key, value, shard))

    def delete(self, key: str, shard: int) -> None:
        """Delete a state and queue its tombstone."""
        raw_key = key.encode()
        self.table.data.pop(raw_key, None)
        self._pending.append((raw_key, None, shard))

    def forget(self, key: str) -> None:
        """Drop the local copy only; the partition's owner keeps the changelog."""
        self.table.data.pop(key.encode(), None)

    def items(self) -> Iterable[tuple[str, bytes]]:
        """A snapshot of the local entries."""
        return [(key.decode(), value) for key, value in list(self.table.data.items())]

    async def send_changelog(self) -> None:
        """Hand every queued changelog record to the producer, in the order written."""
        # One sender at a time (agent or sweeper): two could reorder a key's records.
        async with self._sending:
            while self._pending:
                key, value, shard = self._pending.popleft()
                future = await self.sender.send(self.topic, key, value, shard)
                future.add_done_callback(self._persisted)

    def _persisted(self, future: asyncio.Future[Any]) -> None:
        # What Faust's own changelog callback does outside transactions: a
        # rocksdb store records the offset so the next start recovers from there.
        if not future.cancelled() and future.exception() is None:
            sent = future.result()
            self.table.data.set_persisted_offset(sent.topic_partition, sent.offset)
