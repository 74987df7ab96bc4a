"""A subscriber whose broker is away serves disk, else the default (closed port, no service)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.node import Controller, ControlSubscriber, NodeSettings, PolicyStore
from pipeline.node.kafka import KafkaLogBridge, KafkaSettings
from pipeline.node.testing import signed_update
from schemas import PolicyBody, SegmentPolicy

KEY = b"offline-key"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings(tmp_path: Path, keys: dict[str, str] | None = None) -> NodeSettings:
    return NodeSettings(
        node_id="offline",
        signing_keys={k: SecretStr(v) for k, v in (keys or {"test-key": KEY.decode()}).items()},
        allowed_algorithms=["hmac-sha256"],
        state_dir=tmp_path,
        bootstrap_timeout_s=0.5,
        retry_interval_s=0.2,
    )


def stored_update(version: int = 6) -> bytes:
    policy = SegmentPolicy(thresholds={"normal": 0.7}, min_tokens=2, token_budget=128)
    body = PolicyBody(segments={"global": policy}, exploration_share=0.0)
    return signed_update(body, version=version, key=KEY).to_bytes()


def start(tmp_path: Path, **kw: object) -> tuple[ControlSubscriber, Controller]:
    controller = Controller()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    sub = ControlSubscriber(kafka, settings(tmp_path, **kw), controller)  # type: ignore[arg-type]
    sub.start()
    return sub, controller


def test_a_good_file_is_served_when_the_broker_is_away(tmp_path: Path) -> None:
    PolicyStore(tmp_path, "default").save(stored_update(6))
    sub, controller = start(tmp_path)
    try:
        status = sub.status()
        assert (status.version, status.source, status.bootstrapped) == (6, "disk", False)
        assert controller.snapshot.version == 6 and controller.snapshot.source == "disk"
        assert status.last_error and "could not be read" in status.last_error
    finally:
        sub.stop(timeout=1)


def test_a_tampered_file_is_ignored_for_the_default(tmp_path: Path) -> None:
    data = json.loads(stored_update(6))
    data["body"]["segments"]["global"]["token_budget"] = 64
    PolicyStore(tmp_path, "default").save(json.dumps(data).encode())
    sub, controller = start(tmp_path)
    try:
        assert (sub.version, controller.snapshot.source) == (0, "default")
    finally:
        sub.stop(timeout=1)


def test_a_file_signed_by_a_retired_key_is_ignored(tmp_path: Path) -> None:
    PolicyStore(tmp_path, "default").save(stored_update(6))
    sub, controller = start(tmp_path, keys={"new-key": "rotated"})
    try:
        assert (sub.version, controller.snapshot.source) == (0, "default")
    finally:
        sub.stop(timeout=1)


def test_kafka_log_bridge_demotes_repeats(caplog: pytest.LogCaptureFixture) -> None:
    bridge = KafkaLogBridge(interval_s=60.0, name="test.kafka")
    with caplog.at_level(logging.DEBUG, logger="test.kafka"):
        for _ in range(3):
            bridge.log(logging.ERROR, "%s [%s] %s", "FAIL", "p-1", "connection refused")
        bridge.log(logging.WARNING, "%s [%s] %s", "OTHER", "p-1", "something else")
    levels = [(r.levelno, r.getMessage().split()[0]) for r in caplog.records]
    assert levels == [
        (logging.ERROR, "FAIL"),
        (logging.DEBUG, "FAIL"),
        (logging.DEBUG, "FAIL"),
        (logging.WARNING, "OTHER"),
    ]
