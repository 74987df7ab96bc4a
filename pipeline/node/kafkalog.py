"""librdkafka's log, forwarded to ``logging`` without flooding it.

While a broker is away librdkafka reports every reconnect attempt; an
inference server would log thousands of identical lines. This bridge passes
the first message of each facility at its own level and demotes repeats
within ``interval_s`` to DEBUG, so the operator sees "broker down" once a
minute, not once a millisecond.
"""

from __future__ import annotations

import logging
import threading
import time

LOGGER_NAME = "pipeline.node.kafka"


class KafkaLogBridge:
    """The object given to librdkafka as ``logger`` (it only calls :meth:`log`)."""

    def __init__(self, interval_s: float = 60.0, name: str = LOGGER_NAME) -> None:
        self._log = logging.getLogger(name)
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args: object) -> None:
        """Forward one record; librdkafka calls ``log(level, "%s [%s] %s", fac, name, msg)``."""
        facility = str(args[0]) if args else fmt
        now = time.monotonic()
        with self._lock:
            repeat = now - self._last.get(facility, -self._interval) < self._interval
            if not repeat:
                self._last[facility] = now
        self._log.log(logging.DEBUG if repeat else level, fmt, *args)
