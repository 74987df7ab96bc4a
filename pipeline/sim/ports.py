"""What the runner needs of the node SDK, as protocols.

The SDK's ``Node`` and ``Emitter`` satisfy them as they are (mypy checks it
where the CLI wires them); tests pass in-memory stand-ins.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.node.controller import Controller
from pipeline.node.emitter import EmitterStats


class EventSink(Protocol):
    """A bounded asynchronous producer (the SDK's ``Emitter`` is one)."""

    def emit_bytes(self, request_id: str, payload: bytes) -> bool:
        """Queue one message keyed by request id; False when dropped."""
        ...

    def stats(self) -> EmitterStats:
        """Delivery counters."""
        ...

    def close(self, timeout: float | None = None) -> EmitterStats:
        """Flush and stop."""
        ...


class FleetNode(Protocol):
    """What the runner needs of a node (the SDK's ``Node`` is one)."""

    @property
    def controller(self) -> Controller:
        """The early-stop controller, fed by the node's control subscriber."""
        ...

    @property
    def emitter(self) -> EventSink | None:
        """The inference event producer."""
        ...

    def start(self) -> object:
        """Load the policy and start following updates."""
        ...

    def close(self, timeout: float = 10.0) -> None:
        """Stop following updates and flush."""
        ...
