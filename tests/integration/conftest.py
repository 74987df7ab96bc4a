"""Fixtures of the integration tier. The embedded stack is started once per session, for real.

The ``stack`` fixture starts real Apache Kafka (KRaft), the chdb-backed
warehouse and an MLflow server on free loopback ports in a temporary state
folder, and stops them at the end. If a service cannot start, the fixture
raises and every test that needs it fails: nothing here skips. Plain helper
functions are in ``support.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings, settings_env, with_stored_secrets
from pipeline.node import Node, NodeSettings
from pipeline.node.kafka import KafkaSettings
from tests.integration.support import stack_settings, with_prefix


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The running embedded stack (session-wide); its settings."""
    from pipeline.stack import manager

    settings = stack_settings(tmp_path_factory.mktemp("stack"))
    with manager.tethered(settings):  # stops the stack if this session is killed
        try:
            manager.up(settings)
            # `up` generated the warehouse's writer password under the state folder.
            settings = with_stored_secrets(settings)
            yield settings
        finally:
            manager.down(settings)


@pytest.fixture
def isolated(stack: Settings) -> Settings:
    """The session stack with a uuid topic prefix, so each test has its own topics."""
    from pipeline.stack.topics import ensure_topics

    settings = with_prefix(stack, f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(settings)
    return settings


@pytest.fixture
def stack_env(stack: Settings) -> dict[str, str]:
    """The environment a CLI subprocess needs to talk to the session stack."""
    env = dict(os.environ)
    env.update(settings_env(stack))
    return env


@pytest.fixture
def ml(stack: Settings) -> Any:
    """An MLflow client of the session stack's server."""
    from pipeline.registry.client import connect

    return connect(stack.mlflow)


@pytest.fixture
def node_config() -> dict[str, object]:
    """``NodeSettings`` fields every node of ``start_node`` gets; a module overrides it.

    It names at least the signing keys the nodes trust, ``{key id: SecretStr}``.
    """
    return {}


@pytest.fixture
def start_node(
    isolated: Settings, tmp_path: Path, node_config: dict[str, object]
) -> Iterator[Callable[..., Node]]:
    """Start nodes (no emitter) on the isolated topics; all are closed after the test.

    ``start_node(node_id, kafka=None, **fields)``: a node with its state under
    ``tmp_path / node_id`` (a restart with the same id finds it again), on
    ``kafka`` or the isolated topics, with ``node_config`` and then ``fields``.
    """
    nodes: list[Node] = []

    def start(node_id: str = "node-a", kafka: KafkaSettings | None = None, **extra: object) -> Node:
        settings = NodeSettings.model_validate(
            {
                "node_id": node_id,
                "state_dir": tmp_path / node_id,
                "bootstrap_timeout_s": 30.0,
                "retry_interval_s": 0.5,
                **node_config,
                **extra,
            }
        )
        node = Node(kafka or isolated.kafka, settings, emit=False)
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.close(timeout=5)
