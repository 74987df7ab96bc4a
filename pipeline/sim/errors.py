"""Errors of the simulator.

- PipelineError (pipeline.errors)
    - SimError: the simulated fleet failed.
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class SimError(PipelineError):
    """The simulated fleet failed: the message names the node and the cause; fix it and rerun."""
