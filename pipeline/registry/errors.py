"""Errors of the policy registry, under the pipeline's one exception tree.

- RegistryError (pipeline.errors): MLflow refused a request or is unreachable.
    - ReviewError: the review action is not allowed in the version's state.
    - PolicyArtifactError: a version's policy artifact is missing or invalid.
"""

from __future__ import annotations

from pipeline.errors import RegistryError


class ReviewError(RegistryError):
    """The action does not fit the version's review state: read the reason, pick another."""


class PolicyArtifactError(RegistryError):
    """A version's policy is missing, altered or invalid: never publish it; roll back."""
