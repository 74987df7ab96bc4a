"""The node SDK: what an inference fleet embeds.

It imports only the message contracts, confluent-kafka, pydantic and the
standard library; adapters load their frameworks lazily. Typical use::

    node = Node(settings.kafka, settings.node)
    node.start()                                  # topic, else disk, else default
    plan = node.controller.begin(request_id, segment)
    ... if node.controller.should_stop(plan, tokens, confidence): break
    node.emitter.emit(event)
    node.close()

Everything here imports only the contracts, pydantic, confluent-kafka and the
standard library (``tests/unit/test_node_imports.py`` checks it):
``pipeline.config``, the server side's settings, imports the SDK's settings
(:class:`KafkaSettings`, :class:`NodeSettings`), never the other way round.
"""

from __future__ import annotations

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
from pipeline.node.kafka import KafkaSettings, reliable_producer
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
from pipeline.node.verify import Limits, Trust, Verdict, verify_update, version_action

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
    "KafkaSettings",
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
    "Trust",
    "Verdict",
    "buckets",
    "compile_snapshot",
    "decide",
    "default_policy_body",
    "default_snapshot",
    "next_load_mode",
    "reliable_producer",
    "verify_update",
    "version_action",
]
