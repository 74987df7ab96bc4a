"""Verification of control messages: pure functions from bytes to a verdict.

A bad update is data, not an exception: the verdict carries the refusal reason
that the subscriber acknowledges, and the node keeps its last good policy.
Checks run cheapest-first and the first failure is the reason: schema (which
includes the checksum), policy name, signature (algorithm allowed, key id
not revoked, key known, signature valid), bounds. Version monotonicity
needs the node's state and lives in :func:`version_action`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from pipeline.node.config import NodeSettings
from schemas import PolicyBody, ThresholdUpdate, hmac_verify
from schemas.signing import Ed25519PublicKey, ed25519_verify

MAX_REASON_CHARS = 1000  # PolicyAck.reason holds 1024
_ID = re.compile(r"^[^\s\x00-\x1f\x7f-\x9f]{1,128}$")  # schemas' Id, to keep acks valid


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds an update must respect on this node, beyond what the schema enforces."""

    max_token_budget: int
    max_exploration_share: float = 0.5
    max_canary_share: float = 1.0

    @classmethod
    def from_settings(cls, node: NodeSettings) -> Limits:
        """The limits configured in ``node``."""
        return cls(
            max_token_budget=node.max_token_budget,
            max_exploration_share=node.max_exploration_share,
            max_canary_share=node.max_canary_share,
        )


@dataclass(frozen=True, slots=True)
class Trust:
    """Which keys and algorithms this node accepts.

    Ed25519 public keys verify but cannot sign, so the node's own material
    cannot forge an update; HMAC keys are used only when ``allowed`` lists
    ``hmac-sha256``. A revoked key id is refused even when its signature verifies.
    """

    public_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    hmac_keys: Mapping[str, bytes] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset({"ed25519"})

    @classmethod
    def from_settings(cls, node: NodeSettings) -> Trust:
        """The keys, revocations and algorithms configured in ``node``."""
        return cls(node.ed25519_keys(), node.hmac_keys(), node.revoked(), node.algorithms())

    @classmethod
    def hmac_only(cls, keys: Mapping[str, bytes]) -> Trust:
        """Trust these HMAC keys and nothing else (the caller opts into HMAC explicitly)."""
        return cls(hmac_keys=keys, allowed=frozenset({"hmac-sha256"}))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking one control message.

    ``policy_name`` and ``version`` are what the ack reports: the update's own
    when it parsed, else a best effort from the raw JSON or the Kafka key (a
    version of 1 when none can be recovered; the reason then says so).
    """

    policy_name: str
    version: int
    update: ThresholdUpdate | None
    refusal: str | None

    @property
    def ok(self) -> bool:
        """True when the update passed every check."""
        return self.refusal is None


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


def _best_effort_identity(
    raw: bytes, key: bytes | None, fallback_name: str
) -> tuple[str, int | None]:
    name: str = fallback_name
    version: int | None = None
    if key and _ID.match(key.decode("utf-8", "replace")):
        name = key.decode("utf-8", "replace")
    try:
        data = json.loads(raw)
    except ValueError:
        return name, version
    if isinstance(data, dict):
        if isinstance(data.get("policy_name"), str) and _ID.match(data["policy_name"]):
            name = data["policy_name"]
        if type(data.get("version")) is int and 1 <= data["version"] < 2**63:
            version = data["version"]
    return name, version


def _schema_reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if "checksum" in first["msg"]:
        return "checksum does not match the canonical body"
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"malformed update: {where}: {first['msg']}"


def signature_problem(update: ThresholdUpdate, trust: Trust | Mapping[str, bytes]) -> str | None:
    """Why the signature of ``update`` is not acceptable, or None when it verifies.

    ``trust`` may be a mapping of HMAC keys: then HMAC alone is accepted.
    """
    if not isinstance(trust, Trust):
        trust = Trust.hmac_only(trust)
    kid, algorithm = update.signing_key_id, update.algorithm
    if algorithm not in trust.allowed:
        return (
            f"signature algorithm {algorithm!r} is not supported by this node "
            f"(its settings allow {', '.join(sorted(trust.allowed))})"
        )
    if kid in trust.revoked:
        return f"signing key id {kid!r} is revoked"
    payload = update.signed_payload()
    if algorithm == "ed25519":
        public = trust.public_keys.get(kid)
        if not trust.public_keys:
            return "this node has no Ed25519 public keys configured, so it refuses every update"
        if public is None:
            return f"unknown signing key id {kid!r} (not among this node's Ed25519 public keys)"
        if not ed25519_verify(public, payload, update.signature):
            return f"signature does not verify under key {kid!r}"
        return None
    if not trust.hmac_keys:
        return "this node has no signing keys configured, so it refuses every update"
    key = trust.hmac_keys.get(kid)
    if key is None:
        return f"unknown signing key id {kid!r}"
    if not hmac_verify(key, payload, update.signature):
        return f"signature does not verify under key {kid!r}"
    return None


def bounds_problem(body: PolicyBody, limits: Limits) -> str | None:
    """Why ``body`` breaks this node's limits, or None when it is within them."""
    if body.exploration_share > limits.max_exploration_share:
        return (
            f"exploration_share {body.exploration_share} exceeds this node's cap "
            f"{limits.max_exploration_share}"
        )
    if body.canary_share > limits.max_canary_share:
        return f"canary_share {body.canary_share} exceeds this node's cap {limits.max_canary_share}"
    tables = [("", body.segments)]
    if body.candidate_segments is not None:
        tables.append(("candidate ", body.candidate_segments))
    for label, table in tables:
        for key, policy in table.items():
            share = policy.exploration_share
            if share is not None and share > limits.max_exploration_share:
                return (
                    f"{label}segment {key!r}: exploration_share {share} exceeds "
                    f"this node's cap {limits.max_exploration_share}"
                )
            if policy.token_budget > limits.max_token_budget:
                return (
                    f"{label}segment {key!r}: token_budget {policy.token_budget} exceeds "
                    f"this node's cap {limits.max_token_budget}"
                )
            if policy.min_tokens > policy.token_budget:
                return f"{label}segment {key!r}: min_tokens exceeds token_budget"
            steps = [*policy.schedule, *(s for mode in policy.schedules.values() for s in mode)]
            thresholds = [*policy.thresholds.values(), *(t for _, t in steps)]
            if any(not 0.0 <= t <= 1.0 for t in thresholds):
                return f"{label}segment {key!r}: a threshold is outside [0, 1]"
    return None


def verify_update(
    raw: bytes,
    *,
    policy_name: str,
    keys: Trust | Mapping[str, bytes],
    limits: Limits,
    kafka_key: bytes | None = None,
) -> Verdict:
    """Check a control message end to end, except for its version.

    ``keys`` is the node's :class:`Trust`, or a mapping of HMAC keys (HMAC only).
    """
    try:
        update = ThresholdUpdate.from_bytes(raw)
    except ValidationError as exc:
        name, version = _best_effort_identity(raw, kafka_key, policy_name)
        reason = _schema_reason(exc)
        if version is None:
            reason += " (version unknown, reported as 1)"
        return Verdict(name, version or 1, None, _clip(reason))
    if update.policy_name != policy_name:
        reason = f"update is for policy {update.policy_name!r}; this node follows {policy_name!r}"
        return Verdict(update.policy_name, update.version, None, _clip(reason))
    problem = signature_problem(update, keys) or bounds_problem(update.body, limits)
    if problem:
        return Verdict(update.policy_name, update.version, None, _clip(problem))
    return Verdict(update.policy_name, update.version, update, None)


VersionAction = Literal["apply", "replay", "refuse"]


def version_action(
    update: ThresholdUpdate, applied_version: int, applied_checksum: str | None
) -> tuple[VersionAction, str | None]:
    """What to do with a verified update given the version applied now.

    A newer version is applied. The applied version again, with the same
    content, is a replay (acknowledged, not re-applied). Anything else is
    refused: an older version, or the applied version with different content.
    """
    if update.version > applied_version:
        return "apply", None
    if update.version == applied_version and update.checksum == applied_checksum:
        return "replay", None
    if update.version == applied_version:
        return "refuse", f"version {update.version} is already applied with different content"
    return "refuse", f"stale version {update.version}: version {applied_version} is applied"
