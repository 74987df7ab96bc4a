"""Where join states live: the store protocol, a dict store, and a cache of decoded states.

The worker's store is the Faust table (:class:`pipeline.stream.faust_io.TableStore`);
tests and benchmarks use :class:`DictStore`. Values are bytes either way, so
reading a state means decoding and validating it; :class:`StateCache` keeps
the decoded form of recently used states so that a request's later inputs
skip that work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pipeline.stream.state import JoinState


class StateStore(Protocol):
    """A key-value store of serialised join states."""

    def get(self, key: str) -> bytes | None:
        """The state of ``key``, or None."""

    def put(self, key: str, value: bytes, shard: int) -> None:
        """Store a state; ``shard`` is its partition (where its changelog record goes)."""

    def delete(self, key: str, shard: int) -> None:
        """Remove a state; ``shard`` is its partition."""

    def forget(self, key: str) -> None:
        """Drop a local copy of a state this worker no longer owns (no changelog)."""

    def items(self) -> Iterable[tuple[str, bytes]]:
        """Every state held locally."""


class DictStore:
    """A :class:`StateStore` over a plain dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        """The state of ``key``, or None."""
        return self.data.get(key)

    def put(self, key: str, value: bytes, shard: int) -> None:
        """Store a state."""
        self.data[key] = value

    def delete(self, key: str, shard: int) -> None:
        """Remove a state."""
        self.data.pop(key, None)

    def forget(self, key: str) -> None:
        """Remove a state."""
        self.data.pop(key, None)

    def items(self) -> Iterable[tuple[str, bytes]]:
        """A snapshot of every state."""
        return list(self.data.items())


class StateCache:
    """Decoded states by key, each with the bytes it was decoded from; bounded, oldest out.

    A hit needs the stored bytes to equal the cached ones, so whatever else
    changes the store (changelog recovery, a delete) can never serve a stale
    state: at worst it costs a decode.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[bytes, JoinState]] = {}

    def load(self, key: str, raw: bytes) -> JoinState:
        """The state stored as ``raw``, decoded unless cached.

        Raises:
            JoinStateError: ``raw`` is not a join state.
        """
        hit = self._entries.get(key)
        if hit is not None and hit[0] == raw:
            return hit[1]
        state = JoinState.from_bytes(raw)
        self.remember(key, raw, state)
        return state

    def remember(self, key: str, raw: bytes, state: JoinState) -> None:
        """Cache ``state`` as the decoded form of ``raw``."""
        if self.max_entries <= 0:
            return
        entries = self._entries
        entries.pop(key, None)  # re-inserted last: the newest
        entries[key] = (raw, state)
        if len(entries) > self.max_entries:
            del entries[next(iter(entries))]

    def drop(self, key: str) -> None:
        """Forget ``key``."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
