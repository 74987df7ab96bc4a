"""Settings of the policy registry and publisher (the ``control`` section).

Meant to be wired into ``Settings`` as field ``control``, so the environment
is read in one place (``PIPELINE_CONTROL__...``). This module imports only
pydantic: ``pipeline.config`` can embed it without a cycle.

Lists and maps are kept as plain strings (``"a,b"``, ``"a=x,b=y"``), like the
node's signing keys: such a value reads the same from the environment and
survives ``settings_env`` (which passes ``str(value)``) to a child process.
Python callers may pass a sequence or a mapping; it is joined on the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_MODEL = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_TOPIC = r"^[A-Za-z0-9._-]+$"


class ControlSettings(BaseModel):
    """How policy versions are named, reviewed, signed and published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policies: str = Field(default="default", pattern=rf"^{_NAME}(,{_NAME})*$")
    """Policy names the publisher watches, comma-separated (each a control topic key)."""
    model_prefix: str = Field(default="earlystop-policy-", pattern=r"^[A-Za-z0-9._-]{0,60}$")
    """Registered model of a policy family: this prefix and the policy name..."""
    models: str = Field(default="", pattern=rf"^({_NAME}={_MODEL}(,{_NAME}={_MODEL})*)?$")
    """...unless named here: ``policy=registered-model,...``."""
    algorithm: Literal["ed25519", "hmac-sha256"] = "ed25519"
    """How updates are signed. ``ed25519`` (default): with ``private_key_file``;
    nodes hold only the public key. ``hmac-sha256`` (weaker, explicit opt-in):
    with ``signing_key``; every node holds that secret and so could forge updates."""
    signing_key_id: str = Field(default="control-1", pattern=rf"^{_NAME}$")
    """Key id put on every update; nodes look the key up by this id."""
    private_key_file: Path | None = None
    """Ed25519 private key (unencrypted PEM, mode 0600) from ``pipeline keys generate``."""
    signing_key: SecretStr = SecretStr("")
    """HMAC-SHA256 key, used only with ``algorithm=hmac-sha256``; nodes hold it too."""
    poll_interval_s: float = Field(default=10.0, gt=0, le=3600)
    """How often the publisher reads the ``production`` alias."""
    auto_approve: bool = True
    """Honour a proposal's own "within auto-approve bounds" verdict; False: all wait."""
    control_topic: str = Field(default="policy-control", pattern=_TOPIC)
    audit_topic: str = Field(default="policy-audit", pattern=_TOPIC)
    publish_timeout_s: float = Field(default=30.0, ge=5, le=600)
    """Bound on one delivery to the control topic (librdkafka ``delivery.timeout.ms``)."""
    bootstrap_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """How long reading the control topic to its end may take before the pass is skipped."""

    @field_validator("policies", mode="before")
    @classmethod
    def _join_names(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _join_models(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return value

    def policy_names(self) -> tuple[str, ...]:
        """The watched policy names, in order, without repeats."""
        return tuple(dict.fromkeys(self.policies.split(",")))

    def model_name(self, policy_name: str) -> str:
        """The registered model that holds the versions of ``policy_name``."""
        named = dict(pair.split("=", 1) for pair in self.models.split(",") if pair)
        return named.get(policy_name, f"{self.model_prefix}{policy_name}")

    def hmac_key(self) -> bytes:
        """The signing key as bytes (empty when unset)."""
        return self.signing_key.get_secret_value().encode()
