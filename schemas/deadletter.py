"""Records a worker could not use, kept whole so they can be replayed."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Self

from schemas._base import Message
from schemas._types import (
    MAX_LONG_TEXT,
    Count,
    ErrorKind,
    Id,
    KafkaPartition,
    LongText,
    Timestamp,
)

# A dead letter is a Kafka record too, and a worker's producer refuses records
# over about 1 MB (aiokafka's max_request_size): a larger input record (a 5 MB
# one fits the broker once compressed) would crash the worker on every start, a
# poison pill that blocks its partition.
MAX_DEAD_LETTER_BYTES = 256 * 1024
"""Bytes of a record a dead letter keeps (key and value); the rest stays at its offset."""


class DeadLetter(Message):
    """An input record that failed, with where it came from and why.

    ``key`` and ``raw`` are the record's bytes as consumed; in JSON they are
    base64. The contract puts no size bound on ``raw``: a dead letter must
    never be refused for the size of what it carries. :meth:`capture`, the one
    builder workers use, keeps the head of a record over
    :data:`MAX_DEAD_LETTER_BYTES` with its size and sha256 in ``error``.
    """

    source_topic: Id
    """Topic the record was consumed from."""
    partition: KafkaPartition
    """Its partition (Kafka's are signed 32-bit: 0 to 2**31 - 1)."""
    offset: Count
    """Its offset."""
    key: bytes | None
    """The record key, if any."""
    raw: bytes
    """The record value."""
    error: LongText
    """What went wrong (truncated to 4096 characters by :meth:`capture`)."""
    error_kind: ErrorKind
    """``decode`` (not JSON), ``validate`` (breaks the contract), ``process``, or
    ``warehouse_refused`` (ClickHouse refused the record's row; ``error`` says why)."""
    ts: Timestamp
    """When the worker gave up on it."""
    worker_id: Id
    """The worker that gave up."""

    @classmethod
    def capture(
        cls,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        raw: bytes,
        error: str,
        error_kind: ErrorKind,
        ts: datetime,
        worker_id: str,
    ) -> Self:
        """Build a dead letter that fits the contract and the topic.

        Use this rather than the constructor in failure paths: a long
        validation report must not make the dead letter itself invalid, and a
        record of many megabytes must not make it too large for its topic (the
        head is kept, with the whole record's size and sha256; the record itself
        stays at its source offset).
        """
        if len(raw) + len(key or b"") > MAX_DEAD_LETTER_BYTES:
            whole, digest = len(raw), hashlib.sha256(raw).hexdigest()
            raw = raw[:MAX_DEAD_LETTER_BYTES]
            key = key[:1024] if key is not None else None
            error = (
                f"raw truncated to its first {len(raw)} of {whole} bytes (sha256 {digest}); "
                f"the whole record is at its source offset. {error}"
            )
        if len(error) > MAX_LONG_TEXT:
            error = error[: MAX_LONG_TEXT - 1] + "\N{HORIZONTAL ELLIPSIS}"
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            raw=raw,
            error=error,
            error_kind=error_kind,
            ts=ts,
            worker_id=worker_id,
        )
