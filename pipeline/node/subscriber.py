"""The control subscriber: keeps the controller on the newest valid policy.

Start-up reads the compacted control topic from the beginning to its end
offsets before the node serves, applies the newest valid version of its
policy, then follows the topic on a background thread. Every update is
verified (schema and checksum, policy name, signature, bounds, version)
before it is applied; each one answered gets a ``PolicyAck``. The last good
update is kept on disk and, re-verified, serves a restart without a broker;
with nothing else the packaged safe default serves.

Bootstrap answers only the tail of the history: the newest valid update of
this policy and what came after it. Older messages were superseded, and
acking them on every restart of every node would flood the ack topic.

Failure policy: an unexpected error while handling one message is logged
with its offset and recorded in :meth:`ControlSubscriber.status`; the node
keeps its last good policy and goes on following. A control bug must not
take inference down.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.node.acks import AckSender
from pipeline.node.config import NodeSettings
from pipeline.node.control_log import ControlLog, Record
from pipeline.node.controller import Controller
from pipeline.node.errors import ControlUnavailableError
from pipeline.node.kafka import KafkaSettings
from pipeline.node.snapshot import PolicySource, compile_snapshot, default_snapshot
from pipeline.node.store import PolicyStore
from pipeline.node.verify import Limits, Trust, Verdict, verify_update, version_action
from schemas import ThresholdUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubscriberStatus:
    """What the subscriber serves and how it got there."""

    policy_name: str
    version: int
    source: PolicySource
    applied_at: datetime | None
    bootstrapped: bool
    """True once the control topic has been read to its end."""
    applied: int
    refused: int
    last_refusal: str | None
    last_error: str | None


class ControlSubscriber:
    """Follows the control topic for one policy and feeds the controller."""

    def __init__(self, kafka: KafkaSettings, node: NodeSettings, controller: Controller) -> None:
        self._node = node
        self._controller = controller
        self._keys = Trust.from_settings(node)
        self._limits = Limits.from_settings(node)
        self._store = PolicyStore(node.state_dir, node.policy_name)
        self._acks = AckSender(kafka, f"{kafka.topic_prefix}{node.ack_topic}", node.node_id)
        self._log = ControlLog(kafka, f"{kafka.topic_prefix}{node.control_topic}", node.node_id)
        self._cond = threading.Condition()
        self._applied: ThresholdUpdate | None = None
        self._applied_at: datetime | None = None
        self._source: PolicySource = "default"
        self._bootstrapped = False
        self._counts = {"applied": 0, "refused": 0}
        self._last_refusal: str | None = None
        self._last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SubscriberStatus:
        """Serve the local policy, read the control topic to its end, then follow it.

        Returns within about ``bootstrap_timeout_s``; when the broker is
        unreachable the node serves its last good policy (or the default) and
        the background thread keeps trying.
        """
        self._load_local()
        try:
            self._bootstrap(self._node.bootstrap_timeout_s)
        except ControlUnavailableError as exc:
            self._last_error = str(exc)
            log.warning("%s; serving %s policy v%d", exc, self._source, self.version)
        self._thread = threading.Thread(target=self._follow, name="control-follow", daemon=True)
        self._thread.start()
        return self.status()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following, deliver pending acks, close the clients."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            # A bootstrap in progress ends by its own deadline or at the next poll.
            self._thread.join(max(timeout, self._node.bootstrap_timeout_s + 1.0))
            if self._thread.is_alive():
                log.error("the control thread did not stop; leaving its consumer open")
                return
        self._log.close()
        self._acks.close(timeout)

    def __enter__(self) -> ControlSubscriber:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def version(self) -> int:
        """The applied version (0 for the default policy)."""
        return self._applied.version if self._applied is not None else 0

    def status(self) -> SubscriberStatus:
        """A consistent view of the subscriber's state."""
        with self._cond:
            return SubscriberStatus(
                policy_name=self._node.policy_name,
                version=self.version,
                source=self._source,
                applied_at=self._applied_at,
                bootstrapped=self._bootstrapped,
                applied=self._counts["applied"],
                refused=self._counts["refused"],
                last_refusal=self._last_refusal,
                last_error=self._last_error,
            )

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Block until ``version`` or newer is applied; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.version >= version, timeout)

    def wait_for_refusals(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` updates have been refused; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._counts["refused"] >= count, timeout)

    # -- local policy -----------------------------------------------------------------

    def _load_local(self) -> None:
        raw = self._store.load()
        verdict = self._verify(raw, None) if raw is not None else None
        if verdict is not None and verdict.update is not None:
            self._install(verdict.update, "disk", persist=None)
            log.info("serving the last good policy v%d from %s", self.version, self._store.path)
            return
        if verdict is not None:
            log.warning("ignoring %s: %s", self._store.path, verdict.refusal)
        size = self._node.resolve_cache_size
        self._controller.swap(default_snapshot(self._node.policy_name, cache_size=size))

    def _install(
        self, update: ThresholdUpdate, source: PolicySource, persist: bytes | None
    ) -> None:
        snapshot = compile_snapshot(
            update.body,
            policy_name=update.policy_name,
            version=update.version,
            source=source,
            checksum=update.checksum,
            cache_size=self._node.resolve_cache_size,
        )
        self._controller.swap(snapshot)
        with self._cond:
            self._applied, self._applied_at, self._source = update, datetime.now(UTC), source
            if source == "broker":
                self._counts["applied"] += 1
            self._cond.notify_all()
        if persist is not None:
            try:
                self._store.save(persist)
            except OSError as exc:
                log.error("cannot keep policy v%d on disk: %s", update.version, exc)

    # -- reading the topic ------------------------------------------------------------

    def _bootstrap(self, timeout: float) -> None:
        records = self._log.read_to_end(time.monotonic() + timeout, self._stopping)
        self._catch_up(records)
        with self._cond:
            self._bootstrapped = True
            self._last_error = None
            self._cond.notify_all()

    def _catch_up(self, records: list[Record]) -> None:
        ours = [(rec, self._verify(rec.value, rec.key)) for rec in records]
        ours = [(rec, v) for rec, v in ours if v.policy_name == self._node.policy_name]
        newest = -1
        for i, (_, verdict) in enumerate(ours):
            if verdict.ok and (newest < 0 or verdict.version > ours[newest][1].version):
                newest = i
        for rec, verdict in ours[max(newest, 0) :]:
            self._answer(rec, verdict)

    def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                self._follow_once()
            except Exception as exc:  # noqa: BLE001  # see the failure policy above
                log.exception("the control thread failed; retrying")
                with self._cond:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                self._stopping.wait(self._node.retry_interval_s)

    def _follow_once(self) -> None:
        if not self._bootstrapped:
            try:
                self._bootstrap(self._node.bootstrap_timeout_s)
            except ControlUnavailableError as exc:
                with self._cond:
                    self._last_error = str(exc)
                self._stopping.wait(self._node.retry_interval_s)
            return
        record = self._log.poll(0.2)
        self._acks.poll()
        if record is not None:
            self._answer(record, self._verify(record.value, record.key))

    # -- deciding ---------------------------------------------------------------------

    def _verify(self, raw: bytes, key: bytes | None) -> Verdict:
        return verify_update(
            raw,
            policy_name=self._node.policy_name,
            keys=self._keys,
            limits=self._limits,
            kafka_key=key,
        )

    def _answer(self, record: Record, verdict: Verdict) -> None:
        update = verdict.update
        if update is None:
            self._refuse(record, verdict.policy_name, verdict.version, verdict.refusal or "")
            return
        applied = self._applied
        action, reason = version_action(
            update, self.version, applied.checksum if applied is not None else None
        )
        if action == "apply":
            self._install(update, "broker", persist=record.value)
            log.info("applied policy %s v%d", update.policy_name, update.version)
        elif action == "refuse":
            self._refuse(record, update.policy_name, update.version, reason or "")
            return
        self._acks.applied(update.policy_name, update.version, self._applied_at or _now())

    def _refuse(self, record: Record, policy_name: str, version: int, reason: str) -> None:
        log.warning(
            "refused control message at offset %d (%s v%d): %s",
            record.offset,
            policy_name,
            version,
            reason,
        )
        self._acks.refused(policy_name, version, reason)
        with self._cond:
            self._counts["refused"] += 1
            self._last_refusal = reason
            self._cond.notify_all()


def _now() -> datetime:
    return datetime.now(UTC)
