"""The serving node in tests: `pipeline serve`'s app on a thread, its settings, its events.

The node is the real one (llama.cpp, the packaged SmolLM2 GGUF, the node SDK
on the test's isolated topics); uvicorn serves it in-process on a free port,
so a test can read the node's own state beside what the HTTP API says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import uvicorn

from pipeline.config import Settings
from pipeline.node.decision import buckets
from pipeline.node.testing import publish, signed_update
from pipeline.serve.app import create_app
from pipeline.serve.config import ServerSettings
from pipeline.serve.service import NodeServer
from schemas import InferenceEvent, LoadMode, PolicyBody, SegmentPolicy
from tests.integration.support import free_port, read_values

KEY_ID = "serve-key"
KEY = b"serve-test-signing-key"
QUESTION = "What is the capital of France?"


def server_settings(settings: Settings, state: Path, node_id: str, **serve: Any) -> ServerSettings:
    """The stack's settings (isolated topics) plus a node trusting ``KEY`` and ``serve``."""
    fields = settings.model_dump()
    fields["node"] = {
        **fields["node"],
        "node_id": node_id,
        "state_dir": state / node_id,
        "signing_keys": {KEY_ID: KEY.decode()},
        "allowed_algorithms": ["hmac-sha256"],
        "bootstrap_timeout_s": 30.0,
        "retry_interval_s": 0.5,
        "emitter": {**fields["node"]["emitter"], "linger_ms": 0},
    }
    fields["serve"] = {"port": free_port(), "check_every": 4, "max_tokens": 16, **serve}
    return ServerSettings.model_validate(fields)


@dataclass
class Running:
    """A serving node on a thread."""

    server: NodeServer
    settings: ServerSettings
    base_url: str

    @property
    def port(self) -> int:
        return self.settings.serve.port

    def client(self) -> openai.OpenAI:
        """An OpenAI client of this node."""
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="x", max_retries=0)


@contextmanager
def serving(settings: ServerSettings) -> Iterator[Running]:
    """Load the model, start the app (and so the node) on a thread; stop it afterwards."""
    node_server = NodeServer(settings)
    serve = settings.serve
    config = uvicorn.Config(
        create_app(node_server), host=serve.host, port=serve.port, log_level="warning"
    )
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, name="serve-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not web.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    try:
        yield Running(node_server, settings, f"http://{serve.host}:{serve.port}")
    finally:
        web.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop"


def policy(
    thresholds: dict[LoadMode, float], *, min_tokens: int = 4, exploration: float = 0.0
) -> PolicyBody:
    """A body with one ``global`` segment."""
    segment = SegmentPolicy(thresholds=thresholds, min_tokens=min_tokens, token_budget=4096)
    return PolicyBody(segments={"global": segment}, exploration_share=exploration)


def publish_policy(settings: Settings, body: PolicyBody, version: int) -> None:
    """Sign ``body`` as ``version`` of policy ``default`` and publish it."""
    publish(settings.kafka, signed_update(body, version=version, key=KEY, key_id=KEY_ID))


def request_ids(prefix: str, count: int, *, explore: bool, share: float = 0.2) -> list[str]:
    """Request ids that do (or do not) explore under an exploration share of ``share``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        rid = f"{prefix}-{i}"
        if (buckets(rid)[0] < share) == explore:
            found.append(rid)
        i += 1
    return found


def events(settings: Settings, ids: set[str] | None = None) -> dict[str, InferenceEvent]:
    """The inference events on the isolated topic, by request id (only ``ids`` when given)."""
    found = {}
    for raw in read_values(settings.kafka, "inference-events"):
        event = InferenceEvent.from_bytes(raw)
        if ids is None or event.request_id in ids:
            found[event.request_id] = event
    return found


def chat(client: openai.OpenAI, rid: str, *, max_tokens: int = 16, **extra: Any) -> Any:
    """One non-streaming chat request of ``QUESTION`` with ``rid`` as its request id."""
    return client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=max_tokens,
        temperature=0,
        metadata={"tenant": "acme", "task": "qa", "request_id": rid},
        **extra,
    )
