"""Settings of the controller: ``Settings.controller``, ``PIPELINE_CONTROLLER__...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _default_spec() -> Path:
    # The spec beside the package in a source checkout (or the image's /app).
    return Path(__file__).resolve().parent.parent.parent / "policies" / "earlystop.yaml"


class ControllerSettings(BaseModel):
    """How often the controller optimizes and watches canaries, and on what data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_path: Path = Field(default_factory=_default_spec)
    """The reviewed policy spec (its ``name`` is the policy name and control-topic key)."""
    period_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    """Time between optimize cycles."""
    window_s: float = Field(default=7 * 86400.0, gt=0)
    """Exploration outcomes older than this are not read (``ltt``: each cycle's
    window; ``anytime``: how far back the first cycle reaches)."""
    label_wait_s: float = Field(default=300.0, ge=0, le=7 * 86400)
    """``anytime``: a request is fed to the certificates once it is this old, with
    its label if one has arrived by then; later labels never change what was fed."""
    monitor_interval_s: float = Field(default=30.0, gt=0, le=3600)
    """Time between guardrail checks while a canary runs."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``/metrics`` and ``/health`` on this port (loopback by default); off when unset."""
    metrics_host: str = "127.0.0.1"

    @field_validator("spec_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # The controller may run from any directory; the spec path must not move.
        return value.expanduser().resolve()


def controller_settings(settings: Any) -> ControllerSettings:
    """``settings.controller`` when wired, else the defaults."""
    found = getattr(settings, "controller", None)
    return found if isinstance(found, ControllerSettings) else ControllerSettings()
