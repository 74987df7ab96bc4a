"""Records a worker could not use, kept whole so they can be replayed."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from schemas._base import Message
from schemas._types import MAX_LONG_TEXT, Count, ErrorKind, Id, LongText, Timestamp


class DeadLetter(Message):
    """An input record that failed, with where it came from and why.

    ``key`` and ``raw`` are the record's bytes exactly as consumed; in JSON
    they are base64. ``raw`` has no size bound: a dead letter must never be
    refused for the size of what it carries.
    """

    source_topic: Id
    """Topic the record was consumed from."""
    partition: Count
    """Its partition."""
    offset: Count
    """Its offset."""
    key: bytes | None
    """The record key, if any."""
    raw: bytes
    """The record value."""
    error: LongText
    """What went wrong (truncated to 4096 characters by :meth:`capture`)."""
    error_kind: ErrorKind
    """``decode`` (not JSON), ``validate`` (breaks the contract) or ``process``."""
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
        """Build a dead letter, truncating ``error`` to fit the contract.

        Use this rather than the constructor in failure paths: a long
        validation report must not make the dead letter itself invalid.
        """
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
