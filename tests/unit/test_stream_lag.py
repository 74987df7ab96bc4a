"""Consumer lag and throughput gauges: what /metrics shows per partition and group."""

from __future__ import annotations

from pipeline.stream.lag import LagGauges, lags
from pipeline.stream.metrics import Metrics


def test_lag_is_high_watermark_minus_committed() -> None:
    high = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7, ("u", 0): -1001}
    committed = {("t", 0): 4, ("t", 1): None, ("t", 2): 9, ("u", 0): 0}
    # t/1 never committed counts from 0; a committed offset past the end (a
    # stale watermark) is no lag; an end the client does not know yet is left out.
    assert lags(high, committed) == {("t", 0): 6, ("t", 1): 5, ("t", 2): 0}
    assert lags({("t", 3): 8}, {("t", 3): -1001}) == {("t", 3): 8}


def test_gauges_follow_the_assignment_and_keep_other_groups() -> None:
    metrics = Metrics()
    clock = iter([0.0, 2.0, 4.0]).__next__
    joiner = LagGauges(metrics, "joiner", "stream_records_total", clock=clock)
    metrics.set("stream_consumer_lag", 3, group="sink", topic="o", partition="0")
    joiner.publish({("t", 0): 6, ("t", 1): 5})
    assert metrics.get("stream_consumer_lag", group="joiner", topic="t", partition="0") == 6
    metrics.inc("stream_records_total", 100, topic="x")
    joiner.publish({("t", 1): 1})  # partition 0 was revoked
    text = metrics.render()
    assert 'stream_consumer_lag{group="joiner",partition="1",topic="t"} 1' in text
    assert 'partition="0",topic="t"' not in text
    assert 'stream_consumer_lag{group="sink",partition="0",topic="o"} 3' in text
    assert 'stream_records_per_second{group="joiner"} 50' in text  # 100 records in 2 s
    assert "# TYPE stream_consumer_lag gauge" in text
