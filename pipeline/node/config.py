"""Settings of the node SDK, meant to be wired into ``Settings`` as field ``node``.

They are frozen pydantic models like every other section, so the environment is
still read in one place (``PIPELINE_NODE__...``). The SDK never reads the
environment itself: an inference server builds these (or the whole
``Settings``) once and passes them in.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from schemas import MAX_TOKENS, Id
from schemas.signing import Ed25519PublicKey, load_public_key

_Frozen = ConfigDict(frozen=True, extra="forbid")
_ALG = "(ed25519|hmac-sha256)"


def _default_node_id() -> str:
    # The hostname identifies a pod or machine; strip what an Id refuses.
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:128] or "node"


class LoadBands(BaseModel):
    """Hysteresis bands of the load signal (0 idle, 1 saturated).

    A node enters peak mode at ``peak_enter`` and leaves it only below
    ``peak_exit``; likewise for off-peak. The gaps stop a load that hovers
    around one boundary from flipping the threshold on every request.
    """

    model_config = _Frozen

    offpeak_enter: float = Field(default=0.25, ge=0.0, le=1.0)
    offpeak_exit: float = Field(default=0.35, ge=0.0, le=1.0)
    peak_exit: float = Field(default=0.75, ge=0.0, le=1.0)
    peak_enter: float = Field(default=0.85, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not (self.offpeak_enter < self.offpeak_exit <= self.peak_exit < self.peak_enter):
            msg = "load bands must satisfy offpeak_enter < offpeak_exit <= peak_exit < peak_enter"
            raise ValueError(msg)
        return self


class EmitterSettings(BaseModel):
    """The event producer: how much it may buffer and how long it may wait."""

    model_config = _Frozen

    topic: str = Field(default="inference-events", min_length=1)
    """Logical topic; the Kafka topic prefix is put in front."""
    max_buffered_messages: int = Field(default=100_000, ge=1, le=10_000_000)
    """librdkafka ``queue.buffering.max.messages``: beyond it new events are dropped."""
    max_buffered_kbytes: int = Field(default=65_536, ge=1, le=2_097_151)
    """librdkafka ``queue.buffering.max.kbytes``."""
    linger_ms: int = Field(default=5, ge=0, le=60_000)
    delivery_timeout_ms: int = Field(default=120_000, ge=1_000)
    """After this an undeliverable event counts as failed."""
    compression: Literal["none", "lz4", "zstd", "gzip", "snappy"] = "lz4"
    full_wait_us: int = Field(default=0, ge=0, le=100_000)
    """Extra time ``emit`` may spend serving callbacks when the buffer is full."""
    poll_interval_s: float = Field(default=0.1, gt=0, le=5.0)
    close_timeout_s: float = Field(default=10.0, ge=0)


class NodeSettings(BaseModel):
    """Everything an inference node needs besides the Kafka connection."""

    # validate_default: the default state_dir is made absolute like a configured one.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    node_id: Id = Field(default_factory=_default_node_id)
    """This node's id: the key of its acks and a field of its events."""
    policy_name: Id = "default"
    """The policy this node follows (the key on the control topic)."""
    public_keys: str = "{}"
    """Trusted Ed25519 public keys by key id: a JSON object ``{"key-id": "<key>", ...}``.

    Each key is PEM or the base64 of its 32 raw bytes (``pipeline keys generate``
    prints it). Several may be trusted at once, so a key can be rolled over
    without downtime. A plain string survives ``settings_env``; a mapping is
    accepted too. An update signed under an id not listed here is refused.
    """
    revoked_keys: str = Field(default="", pattern=r"^[^\s,]*(,[^\s,]+)*$")
    """Key ids refused whatever their signature, comma-separated (a JSON list is accepted)."""
    allowed_algorithms: str = Field(default="ed25519", pattern=rf"^{_ALG}(,{_ALG})*$")
    """Signature algorithms accepted, comma-separated: ``ed25519`` and/or ``hmac-sha256``.

    HMAC is refused unless listed here: with it every node holds the secret
    that signs updates, so one compromised node could forge a policy.
    """
    signing_keys: SecretStr = SecretStr("{}")
    """HMAC-SHA256 keys by key id, as a JSON object ``{"key-id": "secret", ...}``.

    Used only when ``allowed_algorithms`` lists ``hmac-sha256``. One secret
    string rather than a dict, so it never shows in ``repr`` and survives
    ``settings_env`` to a child process. A mapping is accepted too.
    """
    state_dir: Path = Path(".state/node")
    """Where the last good policy is kept for restarts without a broker."""
    control_topic: str = Field(default="policy-control", min_length=1)
    ack_topic: str = Field(default="policy-acks", min_length=1)
    bootstrap_timeout_s: float = Field(default=15.0, gt=0)
    """How long ``start`` may read the control topic before serving the local policy."""
    retry_interval_s: float = Field(default=5.0, gt=0)
    """Pause between attempts to reach the control topic after a failed bootstrap."""
    max_token_budget: int = Field(default=32_768, ge=1, le=MAX_TOKENS)
    """Largest token budget an update may set; larger ones are refused."""
    max_exploration_share: float = Field(default=0.2, ge=0.0, le=0.5)
    max_canary_share: float = Field(default=0.5, ge=0.0, le=1.0)
    resolve_cache_size: int = Field(default=65_536, ge=16)
    """Segment keys remembered per policy snapshot before the cache starts over."""
    load: LoadBands = LoadBands()
    emitter: EmitterSettings = EmitterSettings()

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("signing_keys", mode="before")
    @classmethod
    def _keys_from_mapping(cls, value: object) -> object:
        if isinstance(value, Mapping):
            plain = {
                str(kid): key.get_secret_value() if isinstance(key, SecretStr) else key
                for kid, key in value.items()
            }
            return json.dumps(plain)
        return value

    @field_validator("signing_keys")
    @classmethod
    def _keys_are_a_json_object(cls, value: SecretStr) -> SecretStr:
        _parse_keys(value)
        return value

    @field_validator("public_keys", mode="before")
    @classmethod
    def _public_keys_from_mapping(cls, value: object) -> object:
        return (
            json.dumps({str(k): v for k, v in value.items()})
            if isinstance(value, Mapping)
            else value
        )

    @field_validator("public_keys")
    @classmethod
    def _public_keys_parse(cls, value: str) -> str:
        try:
            keys = _parse_keys(SecretStr(value))
        except ValueError:
            msg = 'expected a JSON object {"key-id": "<base64 or PEM public key>", ...}'
            raise ValueError(msg) from None
        for kid, text in keys.items():
            try:
                load_public_key(text)
            except ValueError as exc:
                msg = f"public key {kid!r}: {exc}"
                raise ValueError(msg) from None
        return value

    @field_validator("revoked_keys", "allowed_algorithms", mode="before")
    @classmethod
    def _join_list(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = json.loads(value)
        if isinstance(value, list | tuple | set | frozenset):
            return ",".join(str(v) for v in value)
        return value

    def ed25519_keys(self) -> dict[str, Ed25519PublicKey]:
        """The trusted Ed25519 public keys by key id."""
        return {
            kid: load_public_key(t) for kid, t in _parse_keys(SecretStr(self.public_keys)).items()
        }

    def revoked(self) -> frozenset[str]:
        """The revoked key ids."""
        return frozenset(k for k in self.revoked_keys.split(",") if k)

    def algorithms(self) -> frozenset[str]:
        """The signature algorithms this node accepts."""
        return frozenset(self.allowed_algorithms.split(","))

    def hmac_keys(self) -> dict[str, bytes]:
        """The signing keys as bytes, empty keys left out (they could verify nothing)."""
        return {kid: key.encode() for kid, key in _parse_keys(self.signing_keys).items() if key}


def _parse_keys(value: SecretStr) -> dict[str, str]:
    # Messages never quote the value: it is secret.
    try:
        data = json.loads(value.get_secret_value() or "{}")
    except ValueError:
        msg = 'expected a JSON object {"key-id": "secret", ...}'
        raise ValueError(msg) from None
    if not isinstance(data, dict) or not all(
        isinstance(kid, str) and kid and isinstance(key, str) for kid, key in data.items()
    ):
        msg = 'expected a JSON object {"key-id": "secret", ...} of strings'
        raise ValueError(msg)
    return data
