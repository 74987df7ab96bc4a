"""Errors of the publisher.

- PipelineError (pipeline.errors)
    - PublishError: a policy version could not be published (see the message).
        - PublishRefusedError: a version failed a check and must not be published.
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class PublishError(PipelineError):
    """A version could not be published now: the publisher retries on its next poll."""


class PublishRefusedError(PublishError):
    """A version failed a check (state, review, artifact): fix it in MLflow or roll back."""
