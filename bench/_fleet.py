"""The parts of bench_control.py that run beside it: node hosts, topic watchers, CPU counts.

``host`` is the target of the spawned child processes that host the nodes;
it lives here, not in the script, so a child imports only what it needs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.node.kafka import KafkaSettings

KEY_ID = "bench-control"


# -- the node hosts (child processes) ---------------------------------------------------


def host(
    kafka: dict[str, str],
    node_ids: list[str],
    key: str,
    state_dir: str,
    ready: Any,
    stop: Any,
) -> None:
    """Start ``node_ids`` as real nodes on threads, report, and serve until ``stop``."""
    from pydantic import SecretStr

    from pipeline.node import Node, NodeSettings

    logging.basicConfig(level=logging.WARNING, format="%(processName)s %(levelname)s %(message)s")
    settings = KafkaSettings.model_validate(kafka)

    def start(node_id: str) -> tuple[Node, bool]:
        node_settings = NodeSettings.model_validate(
            {
                "node_id": node_id,
                "signing_keys": {KEY_ID: SecretStr(key)},
                "allowed_algorithms": ["hmac-sha256"],
                "state_dir": Path(state_dir) / node_id,
                "bootstrap_timeout_s": 120.0,
                "retry_interval_s": 0.5,
            }
        )
        node = Node(settings, node_settings, emit=False)
        return node, node.start().bootstrapped

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        started = list(pool.map(start, node_ids))
    ready.put((len(started), sum(ok for _, ok in started), time.monotonic() - began))
    stop.wait()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda pair: pair[0].close(timeout=5), started))


# -- watching the topics ---------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    node_id: str
    version: int
    status: str
    seen: float
    """Wall time (s) this process received it."""
    sent: float
    """The ack message's timestamp (s): when the node produced it."""
    applied: float | None
    """The ack's ``applied_at`` (s)."""


class Watcher:
    """Reads a topic from the beginning on a thread, handing each message to ``on``."""

    def __init__(self, kafka: KafkaSettings, logical: str, on: Callable[[Any, float], None]):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        topic = f"{kafka.topic_prefix}{logical}"
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"bench-watch-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        meta = self._consumer.list_topics(topic, timeout=30).topics[topic]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self._on = on
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is not None and message.error() is None and message.value() is not None:
                self._on(message, time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


class Observed:
    """What the watchers saw: control message times per version, acks per (node, version)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.published: dict[int, float] = {}
        self.acks: dict[tuple[str, int], Ack] = {}

    def on_control(self, message: Any, _seen: float) -> None:
        from schemas import ThresholdUpdate

        update = ThresholdUpdate.from_bytes(message.value())
        with self.cond:
            self.published[update.version] = message.timestamp()[1] / 1000
            self.cond.notify_all()

    def on_ack(self, message: Any, seen: float) -> None:
        from schemas import PolicyAck

        ack = PolicyAck.from_bytes(message.value())
        applied = ack.applied_at.timestamp() if ack.applied_at is not None else None
        row = Ack(
            ack.node_id, ack.version, ack.status, seen, message.timestamp()[1] / 1000, applied
        )
        with self.cond:
            self.acks.setdefault((ack.node_id, ack.version), row)
            self.cond.notify_all()

    def wait(self, what: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(what, timeout)

    def acked(self, version: int) -> int:
        return sum(1 for (_, v) in self.acks if v == version)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Cpu:
    """CPU spent while versions propagated: from just before each publish to its last ack."""

    hosts: float = 0.0
    broker: float = 0.0
    busy: int = 0
    total: int = 0
    wall: float = 0.0

    def window(self, host_pids: list[int], broker_pid: int | None) -> Callable[[], None]:
        """Start a window; call the result to close it and add it up."""
        hosts0 = sum(cpu_seconds(p) for p in host_pids)
        broker0 = cpu_seconds(broker_pid) if broker_pid else float("nan")
        busy0, total0 = machine_jiffies()
        wall0 = time.monotonic()

        def close() -> None:
            busy1, total1 = machine_jiffies()
            self.hosts += sum(cpu_seconds(p) for p in host_pids) - hosts0
            self.broker += (cpu_seconds(broker_pid) if broker_pid else float("nan")) - broker0
            self.busy += busy1 - busy0
            self.total += total1 - total0
            self.wall += time.monotonic() - wall0

        return close


def all_acked(observed: Observed, version: int, nodes: int) -> bool:
    return observed.acked(version) >= nodes
