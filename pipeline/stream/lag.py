"""Consumer lag and throughput gauges, for the joiner's and the sink's consumer groups.

Lag is what a group has not committed yet: the partition's high watermark
(the offset the next record will get) minus the group's committed offset
(the next record it will read after a restart). For the sink that is exactly
what is not yet in ClickHouse. A partition without a committed offset counts
from 0. Only partitions the worker owns right now are reported; a partition
revoked by a rebalance drops out at the next measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from pipeline.stream.metrics import Metrics, Series

Partition = tuple[str, int]
"""A topic and partition number."""


def lags(
    high: Mapping[Partition, int], committed: Mapping[Partition, int | None]
) -> dict[Partition, int]:
    """Lag per partition of ``high``; a missing or unknown committed offset counts as 0."""
    out: dict[Partition, int] = {}
    for tp, end in high.items():
        if end < 0:  # the client does not know the end yet
            continue
        done = committed.get(tp)
        out[tp] = max(end - (done if done is not None and done >= 0 else 0), 0)
    return out


class LagGauges:
    """Publishes one group's lag per partition and its records per second."""

    def __init__(
        self,
        metrics: Metrics,
        group: str,
        counter: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``counter``: the metric that counts the records the group consumed."""
        self.metrics = metrics
        self.group = group
        self.counter = counter
        self.clock = clock
        self._last: tuple[float, float] | None = None

    def publish(self, lag: Mapping[Partition, int]) -> None:
        """Replace the group's lag series with ``lag`` and update its rate."""
        series: dict[Series, float] = {}
        for (topic, partition), value in sorted(lag.items()):
            labels = {
                "group": self.group,
                "topic": topic,
                "partition": str(partition),
            }
            series[("stream_consumer_lag", tuple(sorted(labels.items())))] = value
        self.metrics.replace("stream_consumer_lag", series, group=self.group)
        self._rate()

    def _rate(self) -> None:
        now, total = self.clock(), self.metrics.total(self.counter)
        if self._last is not None and now > self._last[0]:
            per_s = (total - self._last[1]) / (now - self._last[0])
            self.metrics.set("stream_records_per_second", per_s, group=self.group)
        self._last = (now, total)


def owned(partitions: Iterable[tuple[str, int]], topics: Iterable[str]) -> list[Partition]:
    """The ``(topic, partition)`` pairs of ``partitions`` on ``topics``, sorted."""
    wanted = set(topics)
    return sorted((t, p) for t, p in partitions if t in wanted)
