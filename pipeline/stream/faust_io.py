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
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


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


def ignore_offset_gaps(consumer: Any) -> None:
    """Commit input offsets only up to the first record not acknowledged.

    Faust's fetch loop treats a jump in a partition's offsets as a gap (for
    compaction or transaction markers) and commits over it. The joiner's
    inputs have neither, so every jump it sees is an artefact of its own
    recovery: Faust resumes the flow before it seeks the inputs back to their
    committed offsets, and the batch it is still handing out after the seek
    jumps over the records it handed out before. Those records were acked
    too, so each offset in the gap counts twice and Faust's commit then moves
    one offset per commit (minutes of lag after a worker dies); and over
    records handed out but skipped, a gap would commit what was never
    processed. Faust's own check also lets the commit pass one missing record
    right after the committed offset.

    Here gaps are not recorded, and no commit is made while the record at the
    committed offset is not acknowledged: the commit never passes a record
    that was not processed. A consequence: inputs written by transactional
    producers (whose markers take offsets) would hold the commit at the first
    marker. None of this project's producers is transactional, and the
    joiner's lag gauge would show it.
    """
    new_offset = consumer._new_offset  # noqa: SLF001  # the wrapped Faust internals
    acked = consumer._acked  # noqa: SLF001
    committed = consumer._committed_offset  # noqa: SLF001

    async def add_no_gap(tp: Any, offset_from: int, offset_to: int) -> None:
        return None

    def contiguous_offset(tp: Any) -> int | None:
        done, next_offset = acked[tp], committed[tp]
        if done and next_offset is not None and min(done) > next_offset:
            return None  # the record at the committed offset is not done yet
        offset: int | None = new_offset(tp)
        return offset

    consumer._add_gap = add_no_gap  # noqa: SLF001
    consumer._new_offset = contiguous_offset  # noqa: SLF001


class SeekGuard:
    """Hand out no record fetched before Faust's seek to the committed offsets.

    After a rebalance Faust resumes the flow (to read changelogs) before it
    seeks the inputs back to their committed offsets, and its fetch loop goes
    on handing out the batch it fetched before the seek. Those records move
    Faust's read offsets past the records the seek is about to deliver again,
    and Faust drops them as already read. Records handed out before the seek
    while the flow was suspended were skipped, not processed: so some records
    were never processed by anyone (Faust's gaps then committed over them;
    without gaps, see :func:`ignore_offset_gaps`, the commit stops there).

    The guard numbers seeks. The records of a batch whose fetch began before a
    seek ended are dropped from the moment the seek ends, and once the batch
    is through the guard seeks again, so they are read again from the
    committed offsets (the fetch may have read past the first seek's
    positions). A seek also takes the inputs that have no committed offset
    back to their beginning, where a fresh assignment starts
    (``auto_offset_reset=earliest``): Faust's seek leaves them where they are,
    past any dropped records. Records handed out twice are absorbed by the
    join as duplicates (at least once).
    """

    def __init__(self, consumer: Any, inputs: Iterable[str]) -> None:
        self.consumer = consumer
        self.inputs = frozenset(inputs)
        self.seeks = 0
        self.dropped = 0
        self._epoch = 0
        self._batch_epoch = 0
        self._fetch = consumer._getmany  # noqa: SLF001  # the wrapped Faust internals
        self._getmany = consumer.getmany
        self._perform_seek = consumer.perform_seek

    def install(self) -> SeekGuard:
        """Wrap the consumer's fetch, hand-out and seek (before the app starts)."""
        self.consumer._getmany = self.fetch  # noqa: SLF001
        self.consumer.getmany = self.getmany
        self.consumer.perform_seek = self.perform_seek
        return self

    async def fetch(self, active_partitions: Any, timeout: float) -> Any:
        """Faust's raw fetch, noting which seek the batch comes after."""
        epoch = self._epoch
        records = await self._fetch(active_partitions=active_partitions, timeout=timeout)
        self._batch_epoch = epoch
        return records

    async def getmany(self, timeout: float) -> Any:
        """Faust's hand-out of one batch, stopping at a seek that ended since its fetch."""
        dropped = 0
        async for item in self._getmany(timeout):
            if self._batch_epoch != self._epoch:
                dropped += 1
                continue
            yield item
        if dropped:
            # The fetch may have read past the seek's positions: seek again, so
            # that the dropped records are read again from the committed offsets.
            self.dropped += dropped
            log.info("dropped %d records fetched before a seek; seeking again", dropped)
            await self.perform_seek()

    async def perform_seek(self) -> None:
        """Seek to the committed offsets (inputs without one: to their beginning)."""
        self._epoch += 1  # a fetch that starts during the seek may read old positions
        await self._perform_seek()
        consumer = self.consumer
        committed = consumer._committed_offset  # noqa: SLF001
        gaps = consumer._gap  # noqa: SLF001
        fresh = [
            tp for tp in consumer.assignment() if tp.topic in self.inputs and not committed.get(tp)
        ]
        for tp in consumer.assignment():
            gaps.pop(tp, None)
        if fresh:
            # To an offset, not "to the beginning": aiokafka would leave the
            # position unset until its next fetch, and Faust's livelock check
            # asserts on it.
            earliest = await consumer.earliest_offsets(*fresh)
            for tp in fresh:
                await consumer.seek(tp, earliest.get(tp) or 0)
        self._epoch += 1
        self.seeks += 1
        log.debug("seek %d to the committed offsets; to the beginning: %s", self.seeks, fresh)
