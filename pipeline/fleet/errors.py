"""Errors of the fleet view.

- PipelineError (pipeline.errors)
    - FleetUnavailableError: the ack or control topic could not be read.

A malformed ack is not an exception: it is skipped and counted.
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class FleetUnavailableError(PipelineError):
    """The ack or control topic could not be read: check the broker and the topic names."""
