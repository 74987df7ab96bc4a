"""Errors of the optimizer, under the pipeline's one exception tree.

- PipelineError (pipeline.errors)
    - OptimizerError: the optimizer cannot produce a proposal from its input.
        - SpecError: the policy spec (YAML) is invalid; the message names the field.
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class OptimizerError(PipelineError):
    """The optimizer got input it cannot use: the message says which; fix the data or the call."""


class SpecError(OptimizerError):
    """The policy spec is invalid: fix the field the message names, then load it again."""
