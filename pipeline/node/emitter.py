"""The event emitter: asynchronous, bounded, never blocks token generation.

``emit`` hands the event to librdkafka's local queue and returns. Delivery
results arrive on a background thread that polls the producer. When the
queue is full (``max_buffered_messages`` or ``max_buffered_kbytes``), the
policy is **drop-newest**: the event being emitted is discarded, counted in
``dropped`` and logged (rate-limited), after at most ``full_wait_us`` spent
serving callbacks to make room. Older events already queued keep their place,
because they are closer to delivery and dropping them would waste that work.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message

from pipeline.node.config import EmitterSettings
from pipeline.node.errors import EmitterClosedError
from pipeline.node.kafka import KafkaSettings, reliable_producer
from schemas import InferenceEvent

log = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """Counters of one emitter at one moment."""

    sent: int
    """Events the broker acknowledged."""
    failed: int
    """Events handed to the producer that will never be delivered (error, timeout, close)."""
    dropped: int
    """Events refused at ``emit`` because the local buffer was full."""
    queued: int
    """Events waiting for delivery now."""


class _RateLimitedLog:
    """Log the first occurrence at once, then at most one summary per interval."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._next = 0.0
        self._since = 0

    def hit(self, detail: str) -> None:
        self._since += 1
        now = time.monotonic()
        if now >= self._next:
            log.warning("%s (%d since last report): %s", self._what, self._since, detail)
            self._since = 0
            self._next = now + _LOG_EVERY_S


def producer_config(settings: EmitterSettings) -> dict[str, Any]:
    """The emitter's own librdkafka properties (bounded buffer, batching, compression)."""
    return {
        "queue.buffering.max.messages": settings.max_buffered_messages,
        "queue.buffering.max.kbytes": settings.max_buffered_kbytes,
        "linger.ms": settings.linger_ms,
        "delivery.timeout.ms": settings.delivery_timeout_ms,
        "compression.type": settings.compression,
    }


class Emitter:
    """Sends ``InferenceEvent``s to Kafka, keyed by ``request_id``.

    Thread-safe: any number of generation threads may call :meth:`emit`.
    Use as a context manager, or call :meth:`close` on shutdown to flush.
    """

    def __init__(self, kafka: KafkaSettings, settings: EmitterSettings | None = None) -> None:
        self._settings = settings or EmitterSettings()
        self._topic = f"{kafka.topic_prefix}{self._settings.topic}"
        self._lock = threading.Lock()
        self._sent = self._failed = self._dropped = 0
        self._drop_log = _RateLimitedLog("inference events dropped: local buffer full")
        self._fail_log = _RateLimitedLog("inference events not delivered")
        self._full_wait_s = self._settings.full_wait_us / 1e6
        config = producer_config(self._settings)
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        self._producer = reliable_producer(kafka, name="event producer", extra=config)
        self._closed = False  # a plain bool: emit reads it on every call
        self._close_lock = threading.Lock()
        self._poller = threading.Thread(target=self._poll_loop, name="emitter-poll", daemon=True)
        self._poller.start()

    @property
    def topic(self) -> str:
        """The Kafka topic events go to."""
        return self._topic

    def emit(self, event: InferenceEvent) -> bool:
        """Queue ``event`` for delivery; True if queued, False if dropped (buffer full).

        Raises:
            EmitterClosedError: after :meth:`close`.
        """
        return self.emit_bytes(event.request_id, event.to_bytes())

    def emit_bytes(self, request_id: str, payload: bytes) -> bool:
        """Queue an already serialised event; for callers that serialise off the hot path.

        Raises:
            EmitterClosedError: after :meth:`close`.
        """
        if self._closed:
            msg = "emit after close: this emitter has been closed"
            raise EmitterClosedError(msg)
        deadline = 0.0
        while True:
            try:
                self._producer.produce(self._topic, payload, request_id)
                return True
            except BufferError:
                # Serve delivery reports (they free room), within the budget.
                self._producer.poll(0)
                now = time.perf_counter()
                if not deadline:
                    deadline = now + self._full_wait_s
                elif now >= deadline:
                    break
        with self._lock:
            self._dropped += 1
        self._drop_log.hit(f"request {request_id}")
        return False

    def stats(self) -> EmitterStats:
        """The counters now."""
        queued = len(self._producer)
        with self._lock:
            return EmitterStats(self._sent, self._failed, self._dropped, queued)

    def close(self, timeout: float | None = None) -> EmitterStats:
        """Flush for up to ``timeout`` seconds (default from settings), then stop.

        Events still undelivered are purged and counted as failed, so the
        counters always add up: every accepted event ends as sent or failed.
        """
        with self._close_lock:
            if self._closed:
                return self.stats()
            self._closed = True
            self._poller.join()
            wait = self._settings.close_timeout_s if timeout is None else timeout
            remaining = self._producer.flush(wait)
            if remaining:
                log.warning("closing the emitter with %d undelivered events", remaining)
                self._producer.purge(in_queue=True, in_flight=True, blocking=True)
                self._producer.flush(1.0)  # serves the purge's delivery reports
            return self.stats()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _poll_loop(self) -> None:
        interval = self._settings.poll_interval_s
        while not self._closed:
            self._producer.poll(interval)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            with self._lock:
                self._sent += 1
            return
        with self._lock:
            self._failed += 1
        self._fail_log.hit(f"{err.name()}: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        # Transport errors recur while the broker is away; librdkafka retries.
        level = logging.ERROR if err.fatal() else logging.DEBUG
        log.log(level, "emitter producer: %s", err)
