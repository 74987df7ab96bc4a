"""What the serving node raises on purpose."""

from __future__ import annotations

from pipeline.errors import ConfigError, PipelineError


class ModelLoadError(ConfigError):
    """The model cannot be loaded: pass ``--model`` a readable GGUF file."""


class PromptTooLongError(PipelineError):
    """The prompt leaves no room to generate in the context window (HTTP 400)."""


class GenerationCancelled(PipelineError):  # noqa: N818 - a signal, not a failure
    """The client went away; the slot is freed without an event."""


class QueueFullError(PipelineError):
    """Every slot is busy and the queue is full (HTTP 503): retry later."""
