"""Run the worker: the Faust joiner, the ClickHouse sink and the health endpoint.

One failure policy for all of them: whatever fails (an agent, the sweeper,
the sink thread, Faust itself) is reported to one place, the worker stops
every part in order and :meth:`Worker.run` raises
:class:`~pipeline.stream.errors.WorkerCrashedError`, so the process exits
non-zero instead of idling without consuming.

A stop (SIGTERM, SIGINT, or the ``stop`` event) is clean: the joiner stops
first (Faust waits for in-flight records, flushes what they produced and
commits), then the sink writes its buffer to ClickHouse and commits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.config import Settings
from pipeline.stream.app import Clock, Joiner, build_app, changelog_topic, utcnow
from pipeline.stream.config import StreamSettings
from pipeline.stream.errors import WorkerCrashedError
from pipeline.stream.health import HealthServer
from pipeline.stream.lag import LagGauges, lags
from pipeline.stream.metrics import Metrics
from pipeline.stream.processor import INPUTS
from pipeline.stream.sink import Sink, start_sink
from pipeline.stream.topics import check_topics, ensure_changelog
from pipeline.stream.writer import ClickHouseWriter

log = logging.getLogger(__name__)

_WATCH_S = 0.2


def loop_time() -> float:
    """The running event loop's clock."""
    return asyncio.get_running_loop().time()


@contextmanager
def gc_threshold(gen0: int | None) -> Iterator[None]:
    """Run with the garbage collector's youngest generation collected every ``gen0`` allocations.

    The worker allocates a few hundred objects per record; at CPython's
    default (700) collections took a fifth of the joiner's time (see
    BENCHMARKS.md). The previous thresholds come back on exit. None: leave them.
    """
    if gen0 is None:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(gen0, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Worker:
    """The stream worker of one process."""

    def __init__(
        self,
        settings: Settings,
        stream: StreamSettings,
        *,
        metrics: Metrics | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.ready = threading.Event()
        """Set once the joiner has started (table recovered) and the sink runs."""
        self.health_port: int | None = None
        self._failure: BaseException | None = None
        self._state = "starting"
        self._sink_thread: threading.Thread | None = None

    def health(self) -> dict[str, object]:
        """What ``/health`` reports."""
        sink_ok = self._sink_thread is None or self._sink_thread.is_alive()
        ok = self._state == "running" and sink_ok and self._failure is None
        return {"status": "ok" if ok else "failing", "state": self._state, "sink_alive": sink_ok}

    def run(self, stop: threading.Event | None = None) -> None:
        """Run until stopped; raise WorkerCrashedError if any part failed.

        Raises:
            TopicsError: the topics are missing or not co-partitioned (nothing started).
            WorkerCrashedError: a part failed; the message names it.
        """
        partitions = check_topics(self.settings)
        ensure_changelog(self.settings, changelog_topic(self.settings, self.stream), partitions)
        with gc_threshold(self.stream.gc_gen0_threshold):
            asyncio.run(self._main(partitions, stop or threading.Event()))
        if self._failure is not None:
            msg = f"the stream worker stopped after a failure: {self._failure!r}"
            raise WorkerCrashedError(msg) from self._failure

    async def _main(self, partitions: int, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_fatal(exc: BaseException) -> None:
            def mark() -> None:
                if self._failure is None:
                    self._failure = exc
                wake.set()

            loop.call_soon_threadsafe(mark)

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, wake.set)
        joiner = build_app(
            self.settings,
            self.stream,
            partitions=partitions,
            on_fatal=on_fatal,
            metrics=self.metrics,
            clock=self.clock,
        )
        server = self._start_health()
        sink_stop = threading.Event()
        try:
            if self.stream.sink_enabled:
                self._sink_thread = start_sink(self._sink(), sink_stop, on_fatal)
            await joiner.app.start()
            self._state = "running"
            self.ready.set()
            log.info("stream worker %s running on %d partitions", joiner.app_id, partitions)
            await self._watch(joiner, wake, stop)
        finally:
            self._state = "stopping"
            await self._stop_joiner(joiner)
            await self._stop_sink(sink_stop)
            if server is not None:
                server.stop()
            self._state = "stopped"

    async def _watch(self, joiner: Joiner, wake: asyncio.Event, stop: threading.Event) -> None:
        app: Any = joiner.app
        gauges = LagGauges(self.metrics, "joiner", "stream_records_total")
        next_lag = 0.0
        while not wake.is_set() and not stop.is_set():
            if app.crashed and self._failure is None:
                self._failure = app.crash_reason or RuntimeError("the Faust app crashed")
                return
            if loop_time() >= next_lag:
                next_lag = loop_time() + self.stream.lag_interval_s
                await self._measure_lag(app, gauges)
            try:
                await asyncio.wait_for(wake.wait(), _WATCH_S)
            except TimeoutError:
                continue

    async def _measure_lag(self, app: Any, gauges: LagGauges) -> None:
        """Publish the joiner's lag per owned input partition (end offsets asked of the broker)."""
        if app.rebalancing:
            return  # the assignment is about to change
        inputs = {self.settings.topic(name) for name in INPUTS}
        consumer = app.consumer
        owned = [tp for tp in consumer.assignment() if tp.topic in inputs]
        try:
            high = await asyncio.wait_for(consumer.highwaters(*owned), 5.0) if owned else {}
        except Exception as exc:  # a gauge is not worth failing the worker for
            log.debug("measuring the joiner's lag failed: %r", exc)
            return
        # Faust keeps the offsets it committed (the next to read) only here.
        done = consumer._committed_offset  # noqa: SLF001
        gauges.publish(
            lags(
                {(tp.topic, tp.partition): end for tp, end in high.items()},
                {(tp.topic, tp.partition): done.get(tp) for tp in owned},
            )
        )

    async def _stop_joiner(self, joiner: Joiner) -> None:
        try:
            await asyncio.wait_for(joiner.app.stop(), self.stream.shutdown_timeout_s)
        except TimeoutError:
            log.error("the joiner did not stop within %.0f s", self.stream.shutdown_timeout_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # A crashed Faust app cancels its own consumer's drain while stopping;
            # the failure is already recorded, so finish the shutdown.
            log.warning("the joiner's stop was cancelled (it had crashed); closing its clients")
            await self._close_clients(joiner)

    async def _close_clients(self, joiner: Joiner) -> None:
        # Left running, Faust's consumer thread calls into the closed loop later.
        app: Any = joiner.app
        for service in (app.consumer, app.producer):
            try:
                await asyncio.wait_for(service.stop(), 5.0)
            except (Exception, asyncio.CancelledError):  # best effort while crashing
                log.debug("closing %r after a crash failed", service, exc_info=True)

    async def _stop_sink(self, sink_stop: threading.Event) -> None:
        thread = self._sink_thread
        if thread is None:
            return
        sink_stop.set()
        await asyncio.get_running_loop().run_in_executor(
            None, thread.join, self.stream.shutdown_timeout_s
        )
        if thread.is_alive():
            log.error("the sink did not stop within %.0f s", self.stream.shutdown_timeout_s)

    def _sink(self) -> Sink:
        from pipeline.warehouse.client import connect

        writer = ClickHouseWriter(
            lambda: connect(self.settings),
            self.metrics,
            worker_id=self.stream.effective_worker_id(),
        )
        return Sink(self.settings, self.stream, writer, self.metrics)

    def _start_health(self) -> HealthServer | None:
        if self.stream.metrics_port is None:
            return None
        server = HealthServer(
            self.stream.metrics_host, self.stream.metrics_port, self.metrics, self.health
        )
        server.start()
        self.health_port = server.port
        return server
