"""The node SDK: what an inference fleet embeds.

It imports only the message contracts, confluent-kafka, pydantic and the
standard library; adapters load their frameworks lazily. Typical use::

    node = Node(settings.kafka, settings.node)
    node.start()                                  # topic, else disk, else default
    plan = node.controller.begin(request_id, segment)
    ... if node.controller.should_stop(plan, tokens, confidence): break
    node.emitter.emit(event)
    node.close()

Names are loaded on first use (PEP 562), so ``pipeline.node.config`` can be
imported by ``pipeline.config`` without pulling in Kafka clients, and without
an import cycle through the emitter, which itself imports ``pipeline.config``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ControlSubscriber": "subscriber",
    "ControlUnavailableError": "errors",
    "Controller": "controller",
    "Decision": "decision",
    "DecisionReason": "decision",
    "DefaultPolicyError": "errors",
    "Emitter": "emitter",
    "EmitterClosedError": "errors",
    "EmitterSettings": "config",
    "EmitterStats": "emitter",
    "Limits": "verify",
    "LlamaCppStopping": "adapters",
    "LoadBands": "config",
    "Node": "node",
    "NodeError": "errors",
    "NodeSettings": "config",
    "PolicySnapshot": "snapshot",
    "PolicyStore": "store",
    "RequestPlan": "decision",
    "Rule": "decision",
    "SubscriberStatus": "subscriber",
    "TransformersStopping": "adapters",
    "Verdict": "verify",
    "buckets": "decision",
    "compile_snapshot": "snapshot",
    "decide": "decision",
    "default_policy_body": "snapshot",
    "default_snapshot": "snapshot",
    "next_load_mode": "load",
    "verify_update": "verify",
    "version_action": "verify",
}

__all__ = [
    "ControlSubscriber",
    "ControlUnavailableError",
    "Controller",
    "Decision",
    "DecisionReason",
    "DefaultPolicyError",
    "Emitter",
    "EmitterClosedError",
    "EmitterSettings",
    "EmitterStats",
    "Limits",
    "LlamaCppStopping",
    "LoadBands",
    "Node",
    "NodeError",
    "NodeSettings",
    "PolicySnapshot",
    "PolicyStore",
    "RequestPlan",
    "Rule",
    "SubscriberStatus",
    "TransformersStopping",
    "Verdict",
    "buckets",
    "compile_snapshot",
    "decide",
    "default_policy_body",
    "default_snapshot",
    "next_load_mode",
    "verify_update",
    "version_action",
]
"""Kept literal so linters see the exports; a unit test keeps it equal to ``_EXPORTS``."""

if TYPE_CHECKING:
    from pipeline.node.adapters import LlamaCppStopping, TransformersStopping
    from pipeline.node.config import EmitterSettings, LoadBands, NodeSettings
    from pipeline.node.controller import Controller
    from pipeline.node.decision import (
        Decision,
        DecisionReason,
        RequestPlan,
        Rule,
        buckets,
        decide,
    )
    from pipeline.node.emitter import Emitter, EmitterStats
    from pipeline.node.errors import (
        ControlUnavailableError,
        DefaultPolicyError,
        EmitterClosedError,
        NodeError,
    )
    from pipeline.node.load import next_load_mode
    from pipeline.node.node import Node
    from pipeline.node.snapshot import (
        PolicySnapshot,
        compile_snapshot,
        default_policy_body,
        default_snapshot,
    )
    from pipeline.node.store import PolicyStore
    from pipeline.node.subscriber import ControlSubscriber, SubscriberStatus
    from pipeline.node.verify import Limits, Verdict, verify_update, version_action


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
