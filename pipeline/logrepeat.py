"""One line per kind of library complaint per interval, with a count of the rest.

With its broker gone, aiokafka (under Faust) logs every failed connect,
metadata refresh and heartbeat as it retries, up to thousands of lines a
second from one worker (113,157 in an 8 s outage under traffic): the log
that should tell an operator what happened fills with one message, and so
does the disk. :class:`RepeatFilter` lets the first record
of each kind through (logger, level and message template, so records that
differ only in their arguments are one kind), drops the same kind for
``interval`` seconds, then lets the next one through with how many were
dropped. Records of the project's own loggers (``pipeline.*``) always pass:
they are written on purpose, and the stream worker's progress lines repeat by
design.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REPEAT_INTERVAL_S = 30.0
"""How long the same library complaint stays quiet after it was logged."""

_OWN = "pipeline"


@dataclass
class RepeatFilter(logging.Filter):
    """Drops a library's repeats of one message within ``interval`` seconds (see module doc)."""

    interval: float = REPEAT_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, int, object], tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        logging.Filter.__init__(self)

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit ``record`` (possibly with a count of dropped repeats appended)."""
        name = record.name
        if name == _OWN or name.startswith(_OWN + "."):
            return True
        key = (name, record.levelno, record.msg)
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        self._last[key] = (now, 0)
        if seen is not None and seen[1]:
            # getMessage() formats msg % args, so the note goes on the formatted text.
            record.msg = f"{record.getMessage()} ({seen[1]} more like it in {now - seen[0]:.0f}s)"
            record.args = None
        return True


def quiet_repeats(interval: float = REPEAT_INTERVAL_S) -> RepeatFilter:
    """Install a :class:`RepeatFilter` on every handler of the root logger; returns it."""
    repeat = RepeatFilter(interval)
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeat)
    return repeat
