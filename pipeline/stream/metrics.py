"""Counters and gauges of one worker, rendered in the Prometheus text format.

Hand-written rather than ``prometheus_client`` to keep the worker's
dependencies to what the ``server`` extra already installs; the text format
is stable and small. Thread-safe: the joiner (event loop) and the sink
(its own thread) update the same registry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

_Labels = tuple[tuple[str, str], ...]
Series = tuple[str, _Labels]
"""One series: the metric name and its labels as sorted ``(name, value)`` pairs."""

HELP: Mapping[str, tuple[str, str]] = {
    "stream_records_total": ("counter", "Input records consumed by the joiner, by topic."),
    "stream_dead_letters_total": ("counter", "Records sent to dead-letters, by topic and kind."),
    "stream_join_steps_total": ("counter", "Join transitions, by input and result."),
    "stream_outcomes_total": ("counter", "Outcomes produced, by reason (joined or unlabeled)."),
    "stream_orphans_total": ("counter", "Expired entries without an inference event, by kind."),
    "stream_join_entries": ("gauge", "Open join entries held by this worker."),
    "sink_records_total": ("counter", "Records the sink consumed."),
    "sink_rows_total": ("counter", "Rows inserted into ClickHouse, by table."),
    "sink_batches_total": ("counter", "Batches written and committed by the sink."),
    "sink_skipped_total": ("counter", "Records the sink skipped, by reason."),
    "sink_retries_total": ("counter", "Failed ClickHouse writes that were retried."),
    "sink_paused": ("gauge", "1 while the sink holds consumption back for ClickHouse."),
    "sink_buffered_records": ("gauge", "Records buffered by the sink, not yet written."),
    "stream_consumer_lag": (
        "gauge",
        "Records not yet committed per topic partition (high watermark - committed offset), "
        "by consumer group (joiner or sink).",
    ),
    "stream_records_per_second": (
        "gauge",
        "Records consumed per second over the last lag interval, by group (joiner or sink).",
    ),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    # Counters pass 1e6 quickly; "%g" would round them.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """A registry of labelled counters and gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[_Labels, float]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to a counter."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0) + amount

    def add(self, counts: Mapping[Series, float]) -> None:
        """Add many counter increments under one lock (what a batch counted)."""
        with self._lock:
            for (name, labels), amount in counts.items():
                series = self._values.setdefault(name, {})
                series[labels] = series.get(labels, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values.setdefault(name, {})[key] = value

    def replace(self, name: str, values: Mapping[Series, float], **where: str) -> None:
        """Swap every series of ``name`` whose labels include ``where`` for ``values``.

        For gauges of a changing set (lag per assigned partition): series of
        partitions no longer assigned disappear in the same step.
        """
        wanted = set(where.items())
        with self._lock:
            series = self._values.setdefault(name, {})
            for labels in [k for k in series if wanted <= set(k)]:
                del series[labels]
            for (metric, labels), value in values.items():
                if metric == name:
                    series[labels] = value

    def get(self, name: str, **labels: str) -> float:
        """The current value of one series (0 when never touched)."""
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def total(self, name: str) -> float:
        """The sum of every series of a metric."""
        with self._lock:
            return sum(self._values.get(name, {}).values())

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items()}
        for name in sorted(set(snapshot) | set(HELP)):
            kind, text = HELP.get(name, ("untyped", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(snapshot.get(name, {}).items()):
                shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                number = _number(value)
                lines.append(f"{name}{{{shown}}} {number}" if shown else f"{name} {number}")
        return "\n".join(lines) + "\n"
