"""The control loop: policy updates to the fleet and the fleet's acks.

A :class:`ThresholdUpdate` is keyed by ``policy_name`` on a compacted topic.
Its ``checksum`` is the SHA-256 of :func:`canonical_body_bytes`, checked on
validation; its ``signature`` covers the same bytes and is checked by the
receiver against the key named by ``signing_key_id`` (see :mod:`schemas.signing`):
an Ed25519 public key (the default), or an HMAC secret (weaker: every holder can sign).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Self

from pydantic import StringConstraints, model_validator

from schemas._base import Message, Part
from schemas._types import (
    AckStatus,
    Id,
    PolicyVersion,
    ShortText,
    SigningAlgorithm,
    Timestamp,
)
from schemas.policy import PolicyBody
from schemas.signing import Ed25519PrivateKey, ed25519_sign, hmac_sign

Checksum = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""Lower-case hex SHA-256."""

Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/_=-]{16,512}$")]
"""A signature, hex or base64."""


class _SignedContent(Part):
    """The part of an update that the checksum and signature cover."""

    policy_name: Id
    version: PolicyVersion
    created_at: Timestamp
    body: PolicyBody


def canonical_body_bytes(
    policy_name: str, version: int, created_at: datetime, body: PolicyBody
) -> bytes:
    """Return the deterministic bytes that the checksum and signature cover.

    JSON of ``{"body", "created_at", "policy_name", "version"}`` with sorted
    keys, no whitespace, ASCII only and ``created_at`` in UTC.

    Raises:
        pydantic.ValidationError: if an argument breaks its contract.
    """
    content = _SignedContent(
        policy_name=policy_name, version=version, created_at=created_at, body=body
    )
    text = json.dumps(content.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return text.encode("ascii")


def body_checksum(policy_name: str, version: int, created_at: datetime, body: PolicyBody) -> str:
    """Return the lower-case hex SHA-256 of :func:`canonical_body_bytes`."""
    payload = canonical_body_bytes(policy_name, version, created_at, body)
    return hashlib.sha256(payload).hexdigest()


class ThresholdUpdate(Message):
    """A new policy version for the fleet (control topic, keyed by policy name)."""

    policy_name: Id
    """The policy this updates; also the Kafka key."""
    version: PolicyVersion
    """Monotonic version; nodes ignore versions not above the one applied."""
    created_at: Timestamp
    """When the controller produced it."""
    body: PolicyBody
    """The full policy."""
    checksum: Checksum
    """SHA-256 of the canonical bytes; must match the other fields."""
    signature: Signature
    """Signature of the canonical bytes under ``algorithm``."""
    signing_key_id: Id
    """Which key signed it, so receivers can rotate keys."""
    algorithm: SigningAlgorithm
    """Signature algorithm."""

    @model_validator(mode="after")
    def _checksum_matches(self) -> Self:
        if self.checksum != body_checksum(
            self.policy_name, self.version, self.created_at, self.body
        ):
            msg = "checksum does not match the canonical body"
            raise ValueError(msg)
        return self

    def signed_payload(self) -> bytes:
        """Return the canonical bytes the signature covers."""
        return canonical_body_bytes(self.policy_name, self.version, self.created_at, self.body)

    @classmethod
    def sign_hmac(
        cls,
        *,
        policy_name: str,
        version: int,
        created_at: datetime,
        body: PolicyBody,
        key: bytes,
        signing_key_id: str,
    ) -> Self:
        """Build an update with its checksum and an HMAC-SHA256 signature.

        Raises:
            ValueError: if ``key`` is empty.
            pydantic.ValidationError: if an argument breaks its contract.
        """
        payload = canonical_body_bytes(policy_name, version, created_at, body)
        return cls(
            policy_name=policy_name,
            version=version,
            created_at=created_at,
            body=body,
            checksum=hashlib.sha256(payload).hexdigest(),
            signature=hmac_sign(key, payload),
            signing_key_id=signing_key_id,
            algorithm="hmac-sha256",
        )

    @classmethod
    def sign_ed25519(
        cls,
        *,
        policy_name: str,
        version: int,
        created_at: datetime,
        body: PolicyBody,
        private_key: Ed25519PrivateKey,
        signing_key_id: str,
    ) -> Self:
        """Build an update with its checksum and an Ed25519 signature (base64).

        Raises:
            TypeError: if ``private_key`` is not an Ed25519 private key.
            pydantic.ValidationError: if an argument breaks its contract.
        """
        payload = canonical_body_bytes(policy_name, version, created_at, body)
        return cls(
            policy_name=policy_name,
            version=version,
            created_at=created_at,
            body=body,
            checksum=hashlib.sha256(payload).hexdigest(),
            signature=ed25519_sign(private_key, payload),
            signing_key_id=signing_key_id,
            algorithm="ed25519",
        )


class PolicyAck(Message):
    """A node's answer to a :class:`ThresholdUpdate`.

    ``applied_at`` is required iff applied; ``reason`` is required iff refused.
    """

    node_id: Id
    """The answering node."""
    policy_name: Id
    """The policy of the update."""
    version: PolicyVersion
    """The version of the update."""
    ts: Timestamp
    """When the ack was sent."""
    status: AckStatus
    """Whether the node applied or refused the update."""
    reason: ShortText | None = None
    """Why the node refused (bad signature, stale version, invalid policy)."""
    applied_at: Timestamp | None = None
    """When the node started serving this version."""

    @model_validator(mode="after")
    def _status_fields(self) -> Self:
        applied = self.status == "applied"
        if applied != (self.applied_at is not None):
            msg = "applied_at is required iff status is 'applied'"
            raise ValueError(msg)
        if (self.reason is not None) if applied else not self.reason:
            msg = "a non-empty reason is required iff status is 'refused'"
            raise ValueError(msg)
        return self
