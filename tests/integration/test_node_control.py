"""Nodes against the real broker: bootstrap, follow, refuse bad updates, restart offline."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pipeline.config import Settings
from pipeline.node import Node
from pipeline.node.testing import publish, signed_update
from schemas import ThresholdUpdate
from tests.integration._control import acks_matching, global_policy, trusting
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

KEY = b"integration-signing-key"


def update(version: int, threshold: float = 0.8, **kw: object) -> ThresholdUpdate:
    return signed_update(global_policy(threshold), version=version, key=KEY, **kw)  # type: ignore[arg-type]


@pytest.fixture
def node_config() -> dict[str, object]:
    """What every node of this module gets from ``start_node``: the key, a cap on budgets."""
    return {**trusting("test-key", KEY), "max_token_budget": 4096}


def test_five_nodes_apply_a_signed_policy_and_acknowledge(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    nodes = [start_node(f"node-{i}") for i in range(5)]
    assert all(n.subscriber.status().bootstrapped for n in nodes)
    assert all(n.controller.snapshot.source == "default" for n in nodes)

    publish(isolated.kafka, update(1))

    for node in nodes:
        assert node.subscriber.wait_for_version(1, timeout=30), node.settings.node_id
        assert node.controller.snapshot.version == 1
        assert node.controller.should_stop("acme/qa/short", 10, 0.85).reason == "confident"
    acks = acks_matching(isolated.kafka, lambda a: a.version == 1 and a.status == "applied", 5)
    assert sorted(a.node_id for a in acks) == [f"node-{i}" for i in range(5)]


def test_bootstrap_applies_the_newest_valid_version_before_serving(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    publish(isolated.kafka, update(1))
    publish(isolated.kafka, update(2, threshold=0.7))
    publish(isolated.kafka, signed_update(global_policy(), version=3, key=b"wrong-key"))

    node = start_node("late-joiner")

    status = node.subscriber.status()  # start() returned: nothing is served before this
    assert (status.version, status.source, status.bootstrapped) == (2, "broker", True)
    assert node.controller.snapshot.version == 2
    acks = acks_matching(isolated.kafka, lambda a: a.node_id == "late-joiner", 2)
    assert {(a.version, a.status) for a in acks} == {(2, "applied"), (3, "refused")}


def malformed() -> tuple[bytes, bytes]:
    return b"default", b"\x00\xff{not json"


def unsigned() -> tuple[bytes, bytes]:
    data = update(9).model_dump(mode="json")
    data["signature"] = "0" * 64
    return b"default", json.dumps(data).encode()


def wrongly_signed() -> tuple[bytes, bytes]:
    return b"default", signed_update(global_policy(), version=9, key=b"attacker").to_bytes()


def stale() -> tuple[bytes, bytes]:
    return b"default", update(3).to_bytes()


def other_policy() -> tuple[bytes, bytes]:
    return b"other-fleet", update(9, policy_name="other-fleet").to_bytes()


def out_of_bounds() -> tuple[bytes, bytes]:
    return b"default", signed_update(global_policy(budget=100_000), version=9, key=KEY).to_bytes()


def ed25519() -> tuple[bytes, bytes]:
    data = update(9).model_dump(mode="json")
    data["algorithm"] = "ed25519"
    return b"default", json.dumps(data).encode()


BAD = {
    "malformed": (malformed, "default", 1, "malformed update"),
    "unsigned": (unsigned, "default", 9, "does not verify"),
    "wrongly-signed": (wrongly_signed, "default", 9, "does not verify"),
    "stale": (stale, "default", 3, "stale version 3: version 5 is applied"),
    "other-policy": (other_policy, "other-fleet", 9, "this node follows 'default'"),
    "out-of-bounds": (out_of_bounds, "default", 9, "exceeds this node's cap 4096"),
    "ed25519": (ed25519, "default", 9, "'ed25519' is not supported"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_control_messages_are_refused_and_never_applied(
    kind: str, isolated: Settings, start_node: Callable[..., Node]
) -> None:
    make, policy_name, version, needle = BAD[kind]
    node = start_node("node-a")
    publish(isolated.kafka, update(5))
    assert node.subscriber.wait_for_version(5, timeout=30)

    key, raw = make()
    publish(isolated.kafka, raw, key=key.decode())

    assert node.subscriber.wait_for_refusals(1, timeout=30)
    refused = acks_matching(isolated.kafka, lambda a: a.status == "refused", 1)
    assert [(a.node_id, a.policy_name, a.version) for a in refused] == [
        ("node-a", policy_name, version)
    ]
    assert needle in (refused[0].reason or "")
    assert node.controller.snapshot.version == 5
    assert node.subscriber.status().applied == 1
    stored = node.subscriber._store.load()
    assert stored is not None and ThresholdUpdate.from_bytes(stored).version == 5


def test_a_replayed_version_is_acknowledged_but_not_reapplied(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    node = start_node("node-a")
    first = update(4)
    publish(isolated.kafka, first)
    assert node.subscriber.wait_for_version(4, timeout=30)
    applied_at = node.subscriber.status().applied_at
    snapshot = node.controller.snapshot

    publish(isolated.kafka, first)

    acks = acks_matching(isolated.kafka, lambda a: a.version == 4, 2)
    assert [a.status for a in acks] == ["applied", "applied"]
    assert {a.applied_at for a in acks} == {applied_at}
    assert node.controller.snapshot is snapshot
    assert node.subscriber.status().applied == 1


def test_a_node_restarted_without_a_broker_serves_its_last_good_policy(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    first = start_node("node-r")
    publish(isolated.kafka, update(7, threshold=0.66))
    assert first.subscriber.wait_for_version(7, timeout=30)
    first.close(timeout=5)

    offline = isolated.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    again = start_node("node-r", kafka=offline, bootstrap_timeout_s=2.0)

    status = again.subscriber.status()
    assert (status.version, status.source, status.bootstrapped) == (7, "disk", False)
    assert "unreachable" in (status.last_error or "")
    assert again.controller.snapshot.version == 7
    assert again.controller.should_stop("qa", 10, 0.66).stop

    fresh = start_node("node-new", kafka=offline, bootstrap_timeout_s=2.0)
    assert (fresh.subscriber.version, fresh.controller.snapshot.source) == (0, "default")
