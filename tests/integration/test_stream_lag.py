"""Consumer lag in /metrics against the real broker: per partition, for the joiner and the sink."""

from __future__ import annotations

import re
import urllib.request
from collections import Counter

import pytest
from confluent_kafka import Producer

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from schemas.examples import inference_event
from tests.integration._stream import start_worker
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

_LAG = re.compile(r'^stream_consumer_lag\{group="(\w+)",partition="(\d+)",topic="([^"]+)"\} (\d+)$')

# Neither group commits during the test: the joiner commits every 60 s, the sink
# writes (and then commits) only at 100,000 records or after 60 s. So everything
# consumed is lag, and the gauges must show exactly what was produced.
HOLD = StreamSettings(
    commit_interval_s=60.0,
    sink_batch_rows=100_000,
    sink_batch_max_s=60.0,
    lag_interval_s=0.2,
    metrics_port=0,
    shutdown_timeout_s=20.0,
)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:  # noqa: S310  # loopback
        return str(reply.read().decode())


def lag_by_partition(text: str, group: str, topic: str) -> dict[int, int]:
    found = (_LAG.match(line) for line in text.splitlines())
    return {int(m[2]): int(m[4]) for m in found if m and m[1] == group and m[3] == topic}


def test_lag_per_partition_counts_what_is_consumed_but_not_committed(isolated: Settings) -> None:
    run = start_worker(isolated, HOLD)
    try:
        producer = Producer({**isolated.kafka.client_config(), "linger.ms": 0})
        topic = isolated.topic("inference-events")
        per_partition: Counter[int] = Counter()

        def on_delivery(err: object, msg: object) -> None:
            assert err is None
            per_partition[msg.partition()] += 1  # type: ignore[attr-defined]

        for i in range(40):
            event = inference_event().model_copy(
                update={"request_id": f"lag-{i}", "event_id": f"e-lag-{i}"}
            )
            producer.produce(topic, key=event.request_id.encode(), value=event.to_bytes(),
                             on_delivery=on_delivery)  # fmt: skip
        assert producer.flush(30) == 0
        assert len(per_partition) > 1  # spread over several partitions
        port = run.worker.health_port
        assert port is not None

        def settled() -> str | None:
            text = scrape(port)
            joiner = lag_by_partition(text, "joiner", topic)
            sink = lag_by_partition(text, "sink", topic)
            want = {p: per_partition.get(p, 0) for p in joiner}
            rates = re.findall(r'^stream_records_per_second\{group="(\w+)"\} ', text, re.M)
            done = joiner == want and sink == joiner and sum(want.values()) == 40
            return text if done and sorted(rates) == ["joiner", "sink"] else None

        text = eventually(settled, 60, "lag gauges equal to what was produced")
        partitions = len(lag_by_partition(text, "joiner", topic))
        assert partitions == len(lag_by_partition(text, "joiner", isolated.topic("em-labels")))
    finally:
        run.halt()
    assert run.errors == []
