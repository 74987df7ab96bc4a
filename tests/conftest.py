"""Shared fixtures. The embedded stack is started once per session, for real.

The stack fixture starts real Apache Kafka (KRaft), the chdb-backed warehouse
and an MLflow server on free loopback ports in a temporary state folder, and
stops them at the end. If a service cannot start, the fixture raises and every
test that needs it fails: nothing here skips.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings, settings_env


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_settings(state_dir: Path, **extra: object) -> Settings:
    """Settings for a private embedded stack on free ports."""
    return load_settings(
        state_dir=state_dir,
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        clickhouse={"url": f"http://127.0.0.1:{free_port()}"},
        mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"},
        embedded={"kafka_controller_port": free_port(), "kafka_heap": "512m"},
        **extra,
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The running embedded stack (session-wide); its settings."""
    from pipeline.stack import manager

    settings = stack_settings(tmp_path_factory.mktemp("stack"))
    try:
        manager.up(settings)
        yield settings
    finally:
        manager.down(settings)


@pytest.fixture
def isolated(stack: Settings) -> Settings:
    """The session stack with a uuid topic prefix, so each test has its own topics."""
    from pipeline.stack.topics import ensure_topics

    settings = stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}."})
        }
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def stack_env(stack: Settings) -> dict[str, str]:
    """The environment a CLI subprocess needs to talk to the session stack."""
    env = dict(os.environ)
    env.update(settings_env(stack))
    return env
