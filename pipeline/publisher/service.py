"""The publisher: every move of the ``production`` alias becomes a signed control message.

Each pass, per watched policy: read the version ``production`` points at,
decide (:func:`pipeline.publisher.gate.decide_publication`), and when it is a newer,
``READY``, approved version whose approver counts
(:func:`pipeline.publisher.gate.approver_refusal`: a reviewer with EDIT or
MANAGE on the registered model, asked of MLflow with the admin's login, or the
controller's automatic registration), download and validate its policy, sign it
(Ed25519 by default, HMAC-SHA256 if configured; with checksum) as a
ThresholdUpdate whose version is the MLflow version, produce it keyed by
policy name, and tag the version ``published_at``.

Idempotence: the newest version per policy is learned from the control topic
itself (read to its end offsets) at start, again before each publication and
after any failed send. So a restart, a second publisher or a send whose fate
is unknown never puts a version on the topic twice, nor an older one.

Failure policy: MLflow or Kafka being away is a transient error: the pass
reports it, logs it once, and the next poll retries. Nothing but a missing
or unusable signing key (a configuration error, raised at construction) stops the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.audit import AuditEvent, AuditSink, best_effort
from pipeline.config import MlflowSettings
from pipeline.errors import ConfigError
from pipeline.node.kafka import KafkaSettings
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.errors import PublishError
from pipeline.publisher.gate import (
    AUTOMATIC_ACTORS,
    Production,
    approver_refusal,
    automatic_registration,
    decide_publication,
)
from pipeline.publisher.topic import ControlProducer, published_versions
from pipeline.registry import names
from pipeline.registry.errors import PolicyArtifactError
from pipeline.registry.versions import VersionRecord, aliases, get_version, load_policy
from schemas import PolicyBody, ThresholdUpdate
from schemas.signing import Ed25519PrivateKey, load_private_key

log = logging.getLogger(__name__)

ACTOR = "publisher"
PermissionOf = Callable[[str, str], str | None]
"""(registered model, user) -> the user's permission on it, None when there is no such user."""
Status = Literal["published", "up_to_date", "wait", "refused", "idle", "error"]


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass did for one policy."""

    policy_name: str
    status: Status
    version: int | None
    detail: str


class Publisher:
    """Publishes the ``production`` version of each watched policy to the control topic.

    Args:
        kafka: How to reach Kafka (the topic prefix applies).
        mlflow: How to reach the MLflow registry.
        control: Policies, registered model names, signing key, topics, timeouts.
        audit: Where ``published`` and ``publish_refused`` events go (best effort).
        connect: Builds an MLflow client; :func:`pipeline.registry.client.connect` by default.
        permission_of: Who holds what on a registered model; by default MLflow's answer
            to the admin's login (``mlflow.admin_password``).

    Raises:
        ConfigError: if the signing key of ``control.algorithm`` is missing or unusable.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        mlflow: MlflowSettings,
        control: ControlSettings,
        *,
        audit: AuditSink | None = None,
        connect: Callable[[MlflowSettings], Any] | None = None,
        permission_of: PermissionOf | None = None,
    ) -> None:
        self._private_key = _signing_material(control)
        self._permission_of = permission_of or _admin_permission_of(mlflow)
        self._kafka, self._mlflow, self._control = kafka, mlflow, control
        self._audit = best_effort(audit)
        self._connect = connect
        self._client: Any = None
        self._producer: ControlProducer | None = None
        self._published: dict[str, int] | None = None
        self._refusals: set[tuple[str, int | None, str]] = set()
        self._errors: dict[str, str] = {}

    @property
    def published(self) -> dict[str, int] | None:
        """Newest version per policy on the control topic, or None until it was read."""
        return None if self._published is None else dict(self._published)

    def run_once(self) -> list[PassResult]:
        """One pass over every watched policy; never raises for a transient failure."""
        policies = self._control.policy_names()
        try:
            self._read_topic(force=False)
            client = self._mlflow_client()
        except Exception as exc:  # noqa: BLE001  # anything here is retried next poll
            return [self._error(p, None, exc) for p in policies]
        outcomes = []
        for policy in policies:
            try:
                outcomes.append(self._pass(client, policy))
                self._errors.pop(policy, None)
            except Exception as exc:  # noqa: BLE001  # one policy's failure is not the loop's
                self._client = None  # reconnect (and re-check MLflow) next pass
                outcomes.append(self._error(policy, None, exc))
        return outcomes

    def run(
        self, stop: threading.Event, on_pass: Callable[[list[PassResult]], None] | None = None
    ) -> None:
        """Pass every ``poll_interval_s`` until ``stop`` is set.

        The producer connects before the first pass, so the first publication
        does not pay for the connection and the idempotent producer id.
        """
        try:
            self._kafka_producer().warm_up()
        except Exception as exc:  # noqa: BLE001  # the first pass reports Kafka being away
            log.debug("control producer warm-up failed: %s", exc)
        while not stop.is_set():
            try:
                outcomes = self.run_once()
                if on_pass is not None:
                    on_pass(outcomes)
            except Exception:  # noqa: BLE001  # a bug in one pass must not end publishing
                log.exception("publisher pass failed; retrying next poll")
            stop.wait(self._control.poll_interval_s)

    def close(self) -> None:
        """Flush and drop the Kafka producer."""
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    # -- one policy ---------------------------------------------------------------------

    def _pass(self, client: Any, policy: str) -> PassResult:
        model = self._control.model_name(policy)
        production = self._production(client, model)
        decision = decide_publication(policy, production, self._last(policy))
        version = production.version if production is not None else None
        if decision.action == "publish" and production is not None:
            return self._publish(client, policy, model, production)
        if decision.action == "up_to_date" and production is not None:
            self._tag_published(client, model, production, repair=True)
            return PassResult(policy, "up_to_date", version, decision.reason)
        if decision.action == "refuse":
            return self._refuse(policy, model, version, decision.reason)
        status: Status = "wait" if decision.action == "wait" else "idle"
        return PassResult(policy, status, version, decision.reason)

    def _publish(self, client: Any, policy: str, model: str, production: Production) -> PassResult:
        # Re-read the topic: a send whose fate was unknown, or another publisher, may be there.
        self._read_topic(force=True)
        record = get_version(client, model, production.version)  # fresh tags, too
        fresh = Production(record.version, record.status, record.tags)
        decision = decide_publication(policy, fresh, self._last(policy))
        if decision.action == "refuse":
            return self._refuse(policy, model, record.version, decision.reason)
        if decision.action != "publish":
            status: Status = "wait" if decision.action == "wait" else "up_to_date"
            return PassResult(policy, status, record.version, decision.reason)
        refusal = self._approval_refusal(client, model, record)
        if refusal is not None:
            self._tag_refused(client, model, record, refusal)
            return self._refuse(policy, model, record.version, refusal)
        approver = record.tags.get(names.T_APPROVED_BY, "")
        try:
            body = load_policy(client, record)
        except PolicyArtifactError as exc:
            return self._refuse(policy, model, production.version, str(exc))
        update = self._sign(policy, record.version, body)
        try:
            offset = self._kafka_producer().send(update)
        except PublishError:
            self._published = None  # its fate is unknown: learn it from the topic
            raise
        assert self._published is not None  # noqa: S101  # _read_topic(force=True) set it
        self._published[policy] = record.version
        log.info("published %s v%d at offset %d", policy, record.version, offset)
        self._tag_published(client, model, fresh, repair=False, checksum=update.checksum)
        self._audit(
            AuditEvent.new(
                "published",
                policy_name=policy,
                model_name=model,
                version=record.version,
                actor=ACTOR,
                reason=f"production moved to v{record.version}, approved by {approver}",
                details={
                    "offset": offset,
                    "checksum": update.checksum,
                    "approved_by": approver,
                },
            )
        )
        self._refusals = {n for n in self._refusals if n[0] != policy}
        return PassResult(policy, "published", record.version, f"offset {offset}")

    # -- helpers ------------------------------------------------------------------------

    def _approval_refusal(self, client: Any, model: str, record: VersionRecord) -> str | None:
        who = record.tags.get(names.T_APPROVED_BY, "")
        automatic, level = False, None
        if who in AUTOMATIC_ACTORS:
            run = client.get_run(record.run_id) if record.run_id else None
            params = {str(k): str(v) for k, v in (run.data.params if run else {}).items()}
            automatic = automatic_registration(params)
        elif who and who != self._mlflow.service_username:
            level = self._permission_of(model, who)
        return approver_refusal(
            record.version,
            model,
            record.tags,
            service_account=self._mlflow.service_username,
            approver_level=level,
            automatic=automatic,
        )

    def _tag_refused(self, client: Any, model: str, record: VersionRecord, reason: str) -> None:
        if record.tags.get(names.T_PUBLISH_REFUSED) == reason:
            return
        try:
            value = reason[: names.MAX_TAG_CHARS]
            client.set_model_version_tag(model, str(record.version), names.T_PUBLISH_REFUSED, value)
        except Exception as exc:  # noqa: BLE001  # the audit event and the log still say it
            log.warning("%s v%d refused but not tagged: %s", model, record.version, exc)

    def _sign(self, policy: str, version: int, body: PolicyBody) -> ThresholdUpdate:
        now, kid = datetime.now(UTC), self._control.signing_key_id
        if self._private_key is not None:
            return ThresholdUpdate.sign_ed25519(
                policy_name=policy,
                version=version,
                created_at=now,
                body=body,
                private_key=self._private_key,
                signing_key_id=kid,
            )
        return ThresholdUpdate.sign_hmac(
            policy_name=policy,
            version=version,
            created_at=now,
            body=body,
            key=self._control.hmac_key(),
            signing_key_id=kid,
        )

    def _production(self, client: Any, model: str) -> Production | None:
        version = aliases(client, model).get(names.PRODUCTION)
        if version is None:
            return None
        record = get_version(client, model, version)
        return Production(record.version, record.status, record.tags)

    def _tag_published(
        self,
        client: Any,
        model: str,
        production: Production,
        *,
        repair: bool,
        checksum: str | None = None,
    ) -> None:
        if repair and names.T_PUBLISHED_AT in production.tags:
            return
        try:
            version = str(production.version)
            at = datetime.now(UTC).isoformat(timespec="seconds")
            client.set_model_version_tag(model, version, names.T_PUBLISHED_AT, at)
            if checksum is not None:
                client.set_model_version_tag(model, version, names.T_PUBLISHED_CHECKSUM, checksum)
        except Exception as exc:  # noqa: BLE001  # the topic is the record; the tag is repaired later
            log.warning("%s v%d published but not tagged: %s", model, production.version, exc)

    def _refuse(self, policy: str, model: str, version: int | None, reason: str) -> PassResult:
        if (policy, version, reason) not in self._refusals:
            if len(self._refusals) > 1000:
                self._refusals.clear()
            self._refusals.add((policy, version, reason))
            log.warning("not publishing %s: %s", policy, reason)
            if version is not None:
                self._audit(
                    AuditEvent.new(
                        "publish_refused",
                        policy_name=policy,
                        model_name=model,
                        version=version,
                        actor=ACTOR,
                        reason=reason,
                    )
                )
        return PassResult(policy, "refused", version, reason)

    def _error(self, policy: str, version: int | None, exc: Exception) -> PassResult:
        detail = f"{type(exc).__name__}: {exc}"
        if self._errors.get(policy) != detail:  # once per distinct error, not every poll
            self._errors[policy] = detail
            log.warning("publisher: %s: %s; retrying next poll", policy, detail)
        return PassResult(policy, "error", version, detail)

    def _last(self, policy: str) -> int:
        return (self._published or {}).get(policy, 0)

    def _read_topic(self, *, force: bool) -> None:
        if self._published is None or force:
            self._published = published_versions(
                self._kafka, self._control.control_topic, self._control.bootstrap_timeout_s
            )

    def _mlflow_client(self) -> Any:
        if self._client is None:
            if self._connect is None:
                from pipeline.registry.client import connect

                self._connect = connect
            self._client = self._connect(self._mlflow)
        return self._client

    def _kafka_producer(self) -> ControlProducer:
        if self._producer is None:
            self._producer = ControlProducer(
                self._kafka, self._control.control_topic, self._control.publish_timeout_s
            )
        return self._producer


def _signing_material(control: ControlSettings) -> Ed25519PrivateKey | None:
    """The Ed25519 private key, or None for HMAC; checked now so a bad key stops the start."""
    if control.algorithm == "hmac-sha256":
        if not control.hmac_key():
            msg = (
                "PIPELINE_CONTROL__SIGNING_KEY is empty: the publisher signs every update "
                "(algorithm hmac-sha256)"
            )
            raise ConfigError(msg)
        return None
    if control.private_key_file is None:
        msg = (
            "PIPELINE_CONTROL__PRIVATE_KEY_FILE is not set: the publisher signs every update "
            "with Ed25519 (create one with `pipeline keys generate`; or, weaker, set "
            "PIPELINE_CONTROL__ALGORITHM=hmac-sha256 and PIPELINE_CONTROL__SIGNING_KEY)"
        )
        raise ConfigError(msg)
    try:
        return load_private_key(control.private_key_file)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _admin_permission_of(mlflow: MlflowSettings) -> PermissionOf:
    """Ask MLflow, as its admin, what a user holds on a registered model.

    MLflow shows a user's permissions only to admins (and to the user), so the
    publisher needs the admin password; without it every approval by a person
    is an error (retried each pass), never a publication.
    """

    def permission_of(model: str, user: str) -> str | None:
        from pipeline.registry import auth

        if mlflow.admin_password is None:
            msg = (
                f"cannot check whether {user} may approve {model}: no MLflow admin password "
                "(PIPELINE_MLFLOW__ADMIN_PASSWORD, or the file `pipeline up` generated)"
            )
            raise PublishError(msg)
        admin = auth.Login(mlflow.tracking_uri, mlflow.admin_username, mlflow.admin_password)
        return auth.permission(admin, user, "registered_model", model)

    return permission_of


def run_publisher(
    kafka: KafkaSettings,
    mlflow: MlflowSettings,
    control: ControlSettings,
    stop: threading.Event,
    *,
    audit: AuditSink | None = None,
    on_pass: Callable[[list[PassResult]], None] | None = None,
) -> None:
    """Run a publisher until ``stop`` is set (the controller runs this in a thread)."""
    publisher = Publisher(kafka, mlflow, control, audit=audit)
    try:
        publisher.run(stop, on_pass)
    finally:
        publisher.close()
