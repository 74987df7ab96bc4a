"""A library's repeated complaints: one line per kind per interval, with a count."""

from __future__ import annotations

import logging

from pipeline.logrepeat import RepeatFilter

CONNECT = "Unable connect to node with id %s: %s"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_of_one_kind_are_counted_into_the_next_line_after_the_interval() -> None:
    clock = Clock()
    repeat = RepeatFilter(30.0, clock=clock)
    first = record("aiokafka", CONNECT, 1, "refused")
    assert repeat.filter(first)
    assert first.getMessage() == "Unable connect to node with id 1: refused"
    kept = []
    for second in range(1, 30):
        clock.now = float(second)
        # Other arguments, same template: the same kind of complaint.
        kept.append(repeat.filter(record("aiokafka", CONNECT, 1, f"attempt {second}")))
    assert not any(kept)
    clock.now = 31.0
    after = record("aiokafka", CONNECT, 1, "refused")
    assert repeat.filter(after)
    assert (
        after.getMessage() == "Unable connect to node with id 1: refused (29 more like it in 31s)"
    )
    clock.now = 62.0  # nothing dropped since: no count
    quiet = record("aiokafka", CONNECT, 1, "refused")
    assert repeat.filter(quiet)
    assert quiet.getMessage() == "Unable connect to node with id 1: refused"


def test_kinds_are_logger_level_and_template() -> None:
    repeat = RepeatFilter(30.0, clock=Clock())
    assert repeat.filter(record("aiokafka", CONNECT, 1, "x"))
    assert repeat.filter(record("aiokafka.consumer", CONNECT, 1, "x"))
    assert repeat.filter(record("aiokafka", CONNECT, 1, "x", level=logging.WARNING))
    assert repeat.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    assert not repeat.filter(record("aiokafka", "Unable to update metadata from %s", [2]))


def test_the_projects_own_lines_always_pass() -> None:
    repeat = RepeatFilter(30.0, clock=Clock())
    for _ in range(3):
        assert repeat.filter(record("pipeline.stream.runner", "records %d", 0, level=logging.INFO))
        assert repeat.filter(record("pipeline", "stopped"))
    assert repeat.filter(record("pipelines", "x"))
    assert not repeat.filter(record("pipelines", "x"))


def test_a_handler_with_the_filter_writes_one_line_per_kind() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            lines.append(self.format(rec))

    handler = Collect()
    handler.addFilter(RepeatFilter(30.0))
    log = logging.getLogger("aiokafka.test-repeat")
    log.addHandler(handler)
    log.propagate = False
    try:
        for _ in range(100):
            log.error(CONNECT, 1, "refused")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert lines == ["Unable connect to node with id 1: refused"]
