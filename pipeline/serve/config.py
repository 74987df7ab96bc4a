"""Settings of ``pipeline serve``, read from the environment with everything else.

:class:`ServeSettings` is one more section (``PIPELINE_SERVE__...``, e.g.
``PIPELINE_SERVE__SLOTS=4``) of :class:`ServerSettings`, which is the
project's :class:`~pipeline.config.Settings` plus that section: the Kafka
connection and the node's settings (``PIPELINE_NODE__NODE_ID``,
``PIPELINE_NODE__POLICY_NAME``, ``PIPELINE_NODE__SIGNING_KEYS``,
``PIPELINE_NODE__STATE_DIR``, ...) come from the same place as for every other
process. Command-line options override the section's fields.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import SettingsConfigDict

from pipeline.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings, env_name
from pipeline.errors import ConfigError
from pipeline.node.probes import DEFAULT_PROBE_TOKENS
from pipeline.serve.model import default_model_path
from schemas._types import SegmentPart


class ServeSettings(BaseModel):
    """The serving node: model, listening address, slots, queue and checkpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Path | None = None
    """A GGUF file; None: the packaged SmolLM2-135M-Instruct (the ``llm`` extra)."""
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    slots: int = Field(default=2, ge=1, le=64)
    """Generation slots: llama.cpp contexts serving one request each, concurrently."""
    n_ctx: int = Field(default=2048, ge=64, le=1_000_000)
    """Context window per slot in tokens (prompt, generation and one probe)."""
    check_every: int = Field(default=8, ge=1, le=4096)
    """Tokens between checkpoints (a probe and a stop decision at each)."""
    probe_tokens: int = Field(default=DEFAULT_PROBE_TOKENS, ge=1, le=64)
    """Greedy tokens a confidence probe decodes at most."""
    max_queue: int = Field(default=8, ge=0, le=10_000)
    """Requests that may wait for a slot; one more gets HTTP 503."""
    max_tokens: int = Field(default=512, ge=1, le=1_000_000)
    """Generation budget of a request that sets no ``max_tokens``."""
    default_tenant: SegmentPart = "default"
    """Tenant of a request whose ``metadata`` names none."""
    default_task: SegmentPart = "chat"
    """Task of a request whose ``metadata`` names none."""
    threads_per_slot: int | None = Field(default=None, ge=1, le=256)
    """CPU threads per slot; None: the machine's cores shared out between the slots."""

    def model_path(self) -> Path:
        """The model file to load (the packaged default when none is set).

        Raises:
            ModelLoadError: no model set and the ``llm`` extra is not installed.
        """
        return self.model if self.model is not None else default_model_path()

    def threads(self) -> int:
        """CPU threads per slot."""
        if self.threads_per_slot is not None:
            return self.threads_per_slot
        return max(1, (os.cpu_count() or 1) // self.slots)


class ServerSettings(Settings):
    """The project's settings plus the ``serve`` section (``PIPELINE_SERVE__...``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    serve: ServeSettings = ServeSettings()


def _config_error(exc: ValidationError, section: tuple[str, ...]) -> ConfigError:
    first = exc.errors()[0]
    name = env_name(section + tuple(str(part) for part in first["loc"]))
    secret = any(word in name for word in ("PASSWORD", "SECRET", "KEY", "TOKEN"))
    shown = first["input"]
    got = "" if isinstance(shown, dict) or secret else f" (got {shown!r})"
    return ConfigError(f"invalid setting {name}: {first['msg']}{got}")


def load_server_settings(**serve: object) -> ServerSettings:
    """Read the environment once; ``serve`` overrides fields of the serve section.

    Overrides whose value is None are ignored (a command-line option not given).

    Raises:
        ConfigError: a setting is invalid; the message names its variable.
    """
    try:
        settings = ServerSettings()
    except ValidationError as exc:
        raise _config_error(exc, ()) from None
    given = {name: value for name, value in serve.items() if value is not None}
    if not given:
        return settings
    try:
        section = ServeSettings.model_validate({**settings.serve.model_dump(), **given})
    except ValidationError as exc:
        raise _config_error(exc, ("serve",)) from None
    return settings.model_copy(update={"serve": section})
