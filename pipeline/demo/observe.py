"""What the demo watches: ClickHouse, the ack topic and the MLflow registry.

Every reader filters on the run's own policy name, so a shared warehouse or
registry (other runs, other tests) does not leak into the figures.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.config import Settings
from schemas import GLOBAL_SEGMENT, LoadMode, PolicyAck, PolicyBody

BUCKET_S = 15
"""Seconds per EM bucket (the literal in ``_SERIES_SQL``)."""

_SEGMENTS_SQL = """
SELECT concat(tenant, '/', task, '/', length_bucket) AS seg,
       max(policy_version), argMax(threshold, ts), count(), countIf(exploration)
FROM inference_events
WHERE policy_name = {p:String}
GROUP BY seg ORDER BY seg
"""

_SERIES_SQL = """
SELECT toStartOfInterval(ts, INTERVAL 15 SECOND) AS t, exploration,
       count(), countIf(labeled), countIf(labeled AND em), countIf(em_full IS NOT NULL),
       countIf(em_full), max(policy_version)
FROM outcomes FINAL
WHERE policy_name = {p:String}
GROUP BY t, exploration ORDER BY t
"""


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """The latest policy a segment's events were served under."""

    segment: str
    version: int
    threshold: float | None
    events: int
    exploration: int


@dataclass(frozen=True, slots=True)
class EmBucket:
    """EM of one time bucket: served (early-stopped) answers and full generations."""

    t: datetime
    served_labeled: int = 0
    served_em: int = 0
    full_labeled: int = 0
    full_em: int = 0
    version: int = 0

    @property
    def served_rate(self) -> float | None:
        """EM of served answers (non-exploration, labeled)."""
        return self.served_em / self.served_labeled if self.served_labeled else None

    @property
    def full_rate(self) -> float | None:
        """EM of full generations (exploration requests run to their end)."""
        return self.full_em / self.full_labeled if self.full_labeled else None


def segments(client: Any, policy: str) -> list[SegmentRow]:
    """Per segment: the newest version and threshold seen in ``inference_events``."""
    rows = client.query(_SEGMENTS_SQL, parameters={"p": policy}).result_rows
    return [
        SegmentRow(str(s), int(v), None if th is None else float(th), int(n), int(x))
        for s, v, th, n, x in rows
    ]


def em_series(client: Any, policy: str) -> list[EmBucket]:
    """EM of served answers and of full generations per time bucket (from ``outcomes``)."""
    merged: dict[datetime, dict[str, int]] = {}
    rows = client.query(_SERIES_SQL, parameters={"p": policy}).result_rows
    for t, exploration, _n, labeled, em, full_n, full_em, version in rows:
        slot = merged.setdefault(t, dict.fromkeys(("sl", "se", "fl", "fe", "v"), 0))
        if exploration:
            slot["fl"] += int(full_n)
            slot["fe"] += int(full_em)
        else:
            slot["sl"] += int(labeled)
            slot["se"] += int(em)
        slot["v"] = max(slot["v"], int(version))
    return [
        EmBucket(t, s["sl"], s["se"], s["fl"], s["fe"], s["v"]) for t, s in sorted(merged.items())
    ]


def event_count(client: Any, policy: str) -> int:
    """Inference events of the run that reached ClickHouse."""
    sql = "SELECT count() FROM inference_events WHERE policy_name = {p:String}"
    return int(client.query(sql, parameters={"p": policy}).result_rows[0][0])


@dataclass(frozen=True, slots=True)
class Registry:
    """The policy family in MLflow: production alias, versions, canary states."""

    production: int | None = None
    versions: int = 0
    canary: str = "none"
    history: tuple[tuple[int, str], ...] = ()
    """(version, one-line description) oldest first."""
    policies: tuple[VersionPolicy, ...] = ()
    """Every version's policy body and review state, oldest first."""


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """One registered version: when, its review state and its policy body."""

    version: int
    created_at: datetime | None
    review_state: str
    body: PolicyBody | None

    def threshold(self, key: str, mode: LoadMode = "normal") -> float | None:
        """The threshold ``key`` is served with in ``mode`` (most specific key first)."""
        if self.body is None:
            return None
        tenant_task_bucket = key.split("/")
        for candidate in (key, tenant_task_bucket[1], GLOBAL_SEGMENT):
            rules = self.body.segments.get(candidate)
            if rules is not None:
                return rules.thresholds.get(mode, rules.thresholds["normal"])
        return None


def registry(settings: Settings, policy: str, *, bodies: bool = False) -> Registry:
    """Read the registry (raises a PipelineError when MLflow is down).

    With ``bodies``, every version's policy is loaded too (one artifact read each).
    """
    from pipeline.registry.client import connect
    from pipeline.registry.versions import aliases, list_versions, load_policy

    client = connect(settings.mlflow)
    model = settings.control.model_name(policy)
    records = sorted(list_versions(client, model), key=lambda r: r.version)
    if not records:
        return Registry()
    canary = "none"
    for r in records:
        state = r.tags.get("canary_state")
        if state:
            canary = f"v{r.version} {state}"
    history = tuple((r.version, _describe(r.tags, r.description)) for r in records)
    policies = tuple(
        VersionPolicy(r.version, r.created_at, r.review_state or "", load_policy(client, r))
        for r in (records if bodies else ())
    )
    production = aliases(client, model).get("production")
    return Registry(production, len(records), canary, history, policies)


def _describe(tags: dict[str, str], description: str) -> str:
    for key in ("canary_of", "promotes", "rollback_of"):
        if key in tags:
            return f"{key.replace('_', ' ')} v{tags[key]}"
    return (tags.get("review_state") or description or "")[:60]


@dataclass
class AckWatcher:
    """Follows the ack topic from its beginning in a thread; keeps this run's acks."""

    settings: Settings
    policy: str
    applied: dict[str, int] = field(default_factory=dict)
    """Node id -> highest version it applied."""
    refused: list[PolicyAck] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following."""
        self._thread = threading.Thread(target=self._run, name="demo-acks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def versions(self) -> dict[str, int]:
        """Node id -> highest applied version, now."""
        with self._lock:
            return dict(self.applied)

    def _run(self) -> None:
        kafka = self.settings.kafka
        topic = self.settings.topic(self.settings.node.ack_topic)
        consumer = Consumer(
            {**kafka.client_config(), "group.id": f"demo-acks-{uuid.uuid4().hex}",
             "enable.auto.commit": False}
        )  # fmt: skip
        try:
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                value = None if message is None or message.error() else message.value()
                if value is None:
                    continue
                ack = PolicyAck.from_bytes(value)
                if ack.policy_name != self.policy:
                    continue
                with self._lock:
                    if ack.status == "applied":
                        seen = self.applied.get(ack.node_id, 0)
                        self.applied[ack.node_id] = max(ack.version, seen)
                    else:
                        self.refused.append(ack)
        finally:
            consumer.close()
