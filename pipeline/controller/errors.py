"""Errors of the controller."""

from __future__ import annotations

from pipeline.errors import PipelineError


class CycleError(PipelineError):
    """An optimize cycle produced nothing publishable: read the message, fix the spec or data."""
