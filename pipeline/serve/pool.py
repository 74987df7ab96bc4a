"""Generation slots and the queue in front of them; the node's load signal.

A :class:`SlotPool` holds N engines (slots). A request is admitted at once
or refused: it takes a free slot, or waits in the queue while at most
``max_queue`` others wait, else :class:`~pipeline.serve.errors.QueueFullError`
(HTTP 503). Waiting happens in the request's worker thread, never on the
event loop.

The load signal is real occupancy, ``(busy slots + queued requests) / slots``
clipped to [0, 1]. It is fed to the controller (``on_load``) when a request
arrives, as the arrival finds the node (before it counts itself), and again
when a request leaves. So a node serving requests one at a time is idle
between them and runs them off-peak; one whose arrivals find every slot busy
runs them at peak; the controller's :class:`~pipeline.node.LoadBands` add the
hysteresis. The load an arrival found is the ``node_load`` of its event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from pipeline.serve.errors import QueueFullError

E = TypeVar("E")

LoadObserver = Callable[[float], object]


def occupancy(busy: int, queued: int, slots: int) -> float:
    """``(busy + queued) / slots``, clipped to [0, 1]."""
    if slots < 1:
        msg = f"slots must be at least 1, got {slots}"
        raise ValueError(msg)
    return min(1.0, max(0.0, (busy + queued) / slots))


class SlotPool(Generic[E]):
    """N engines, one request each, and a bounded queue; thread-safe.

    Args:
        engines: One per slot.
        max_queue: Requests that may wait for a slot beyond the busy ones.
        on_load: Called with the load at each arrival and departure
            (``controller.observe_load``).
    """

    def __init__(
        self, engines: Sequence[E], *, max_queue: int, on_load: LoadObserver | None = None
    ) -> None:
        if not engines:
            msg = "a pool needs at least one engine"
            raise ValueError(msg)
        if max_queue < 0:
            msg = f"max_queue must be >= 0, got {max_queue}"
            raise ValueError(msg)
        self._free = list(engines)
        self._slots = len(engines)
        self._max_queue = max_queue
        self._on_load = on_load
        self._cond = threading.Condition()
        self._busy = 0
        self._queued = 0

    @property
    def slots(self) -> int:
        """Number of slots."""
        return self._slots

    @property
    def busy(self) -> int:
        """Slots generating now."""
        return self._busy

    @property
    def queued(self) -> int:
        """Admitted requests waiting for a slot."""
        return self._queued

    def load(self) -> float:
        """Occupancy now, in [0, 1]."""
        with self._cond:
            return occupancy(self._busy, self._queued, self._slots)

    def admit(self) -> Lease[E]:
        """Admit a request (it waits in the queue until :meth:`Lease.take`).

        Raises:
            QueueFullError: every slot is busy and ``max_queue`` requests wait.
        """
        with self._cond:
            found = occupancy(self._busy, self._queued, self._slots)
            if self._busy + self._queued >= self._slots + self._max_queue:
                msg = (
                    f"all {self._slots} slots are busy and {self._queued} requests are "
                    "queued: retry later"
                )
                raise QueueFullError(msg)
            self._queued += 1
        self._observe(found)
        return Lease(self, found)

    def _take(self, timeout: float | None) -> E | None:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._free), timeout):
                return None
            self._queued -= 1
            self._busy += 1
            return self._free.pop()

    def _leave(self, engine: E | None) -> None:
        with self._cond:
            if engine is None:
                self._queued -= 1
            else:
                self._busy -= 1
                self._free.append(engine)
                self._cond.notify()
            load = occupancy(self._busy, self._queued, self._slots)
        self._observe(load)

    def _observe(self, load: float) -> None:
        if self._on_load is not None:
            self._on_load(load)


class Lease(Generic[E]):
    """One admitted request's place: queued, then holding a slot, then gone.

    Use as a context manager around the request's work: leaving it frees the
    slot (or the queue place) whatever happened.
    """

    def __init__(self, pool: SlotPool[E], found: float) -> None:
        self._pool = pool
        self._engine: E | None = None
        self._done = False
        self.load = found
        """The occupancy this request found when it arrived (its event's ``node_load``)."""

    def take(self, timeout: float | None = None) -> E | None:
        """Wait for a slot and return its engine; None on timeout (still queued)."""
        if self._engine is None and not self._done:
            self._engine = self._pool._take(timeout)  # noqa: SLF001 - the pool's own lease
        return self._engine

    def release(self) -> None:
        """Give the slot (or the queue place) back; idempotent."""
        if not self._done:
            self._done = True
            self._pool._leave(self._engine)  # noqa: SLF001

    def __enter__(self) -> Lease[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
