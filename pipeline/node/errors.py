"""Errors of the node SDK.

- PipelineError (pipeline.errors)
    - NodeError: root of the SDK's own errors.
        - DefaultPolicyError: the packaged safe default policy is missing or invalid.
        - EmitterClosedError: an event was emitted after ``Emitter.close``.
        - ControlUnavailableError: the control topic could not be read to its end.

A refused policy update is not an exception: it is data (a refusal reason
that goes into a ``PolicyAck``), since a bad control message must never stop
a node from serving.
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class NodeError(PipelineError):
    """Root of the node SDK's errors."""


class DefaultPolicyError(NodeError):
    """The packaged default policy cannot be loaded: reinstall the package."""


class EmitterClosedError(NodeError):
    """``emit`` was called after ``close``: create a new emitter, or emit before closing."""


class ControlUnavailableError(NodeError):
    """The control topic could not be read: check the broker and the topic.

    The node keeps serving its last good policy meanwhile.
    """
