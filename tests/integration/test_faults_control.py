"""Hostile control messages the other control-plane tests leave out.

tests/integration/test_node_control.py covers a forged or missing signature,
an older version signed anew, another policy's update, a token budget over
the node's cap, malformed bytes, and a restart without a broker. Here: the
exact bytes of a version the node once applied, replayed after a newer one;
a version number reused with other content; thresholds outside [0, 1] in a
correctly signed message; and a restart without a broker after a refusal.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable

import pytest

from pipeline.config import Settings
from pipeline.node import Node
from pipeline.node.kafka import KafkaSettings
from pipeline.node.testing import publish, signed_update
from schemas import PolicyAck, ThresholdUpdate, hmac_sign
from tests.integration._control import acks_matching, global_policy, trusting
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

KEY = b"faults-signing-key"
NODE = "node-f"


def update(version: int, threshold: float = 0.8) -> ThresholdUpdate:
    return signed_update(global_policy(threshold), version=version, key=KEY)


@pytest.fixture
def node_config() -> dict[str, object]:
    """What every node of this module gets from ``start_node``: the signing key."""
    return trusting("test-key", KEY)


def resigned(raw: bytes, edit: Callable[[dict[str, object]], None]) -> bytes:
    """``raw`` with its body edited, then checksummed and signed as the publisher would.

    The canonical bytes are rebuilt the way ``schemas.control`` builds them
    (sorted keys, no spaces, ASCII), but without the model's validation, so a
    holder of the key can sign a body the schema would refuse.
    """
    data = json.loads(raw)
    edit(data["body"])
    content = {k: data[k] for k in ("body", "created_at", "policy_name", "version")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
    data["checksum"] = hashlib.sha256(canonical).hexdigest()
    data["signature"] = hmac_sign(KEY, canonical)
    return json.dumps(data, allow_nan=True).encode()


def refusals(kafka: KafkaSettings, count: int) -> list[PolicyAck]:
    return acks_matching(kafka, lambda a: a.status == "refused", count)


def stored_version(node: Node) -> int:
    stored = node.subscriber._store.load()  # noqa: SLF001  # the file a restart would read
    assert stored is not None
    return ThresholdUpdate.from_bytes(stored).version


def test_a_replay_of_an_applied_version_after_a_newer_one_is_refused(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    node = start_node(NODE)
    old = update(4, threshold=0.6).to_bytes()  # captured off the wire by an attacker
    publish(isolated.kafka, old, key="default")
    assert node.subscriber.wait_for_version(4, timeout=30)
    publish(isolated.kafka, update(5, threshold=0.9))
    assert node.subscriber.wait_for_version(5, timeout=30)
    newer = node.controller.snapshot

    publish(isolated.kafka, old, key="default")  # the same bytes, validly signed, again

    assert node.subscriber.wait_for_refusals(1, timeout=30)
    refused = refusals(isolated.kafka, 1)
    assert [(a.version, a.reason) for a in refused] == [
        (4, "stale version 4: version 5 is applied")
    ]
    assert node.controller.snapshot is newer
    assert not node.controller.should_stop("qa", 10, 0.7).stop  # 0.6 would have stopped
    assert stored_version(node) == 5


def test_a_version_number_reused_with_other_content_is_refused(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    node = start_node(NODE)
    publish(isolated.kafka, update(6, threshold=0.9))
    assert node.subscriber.wait_for_version(6, timeout=30)

    publish(isolated.kafka, update(6, threshold=0.5))

    assert node.subscriber.wait_for_refusals(1, timeout=30)
    refused = refusals(isolated.kafka, 1)
    assert [(a.version, a.reason) for a in refused] == [
        (6, "version 6 is already applied with different content")
    ]
    assert not node.controller.should_stop("qa", 10, 0.6).stop


OUT_OF_BOUNDS: dict[str, Callable[[dict[str, object]], None]] = {
    "above-one": lambda b: b["segments"]["global"]["thresholds"].update(normal=1.5),  # type: ignore[index]
    "negative": lambda b: b["segments"]["global"]["thresholds"].update(normal=-0.1),  # type: ignore[index]
    "nan": lambda b: b["segments"]["global"]["thresholds"].update(normal=math.nan),  # type: ignore[index]
    "infinite": lambda b: b["segments"]["global"]["thresholds"].update(normal=math.inf),  # type: ignore[index]
    "exploration-above-one": lambda b: b.update(exploration_share=2.0),
}


@pytest.mark.parametrize("kind", sorted(OUT_OF_BOUNDS))
def test_correctly_signed_thresholds_out_of_bounds_are_refused(
    kind: str, isolated: Settings, start_node: Callable[..., Node]
) -> None:
    node = start_node(NODE)
    publish(isolated.kafka, update(2))
    assert node.subscriber.wait_for_version(2, timeout=30)

    publish(isolated.kafka, resigned(update(3).to_bytes(), OUT_OF_BOUNDS[kind]), key="default")

    assert node.subscriber.wait_for_refusals(1, timeout=30)
    refused = refusals(isolated.kafka, 1)
    assert [(a.node_id, a.version) for a in refused] == [(NODE, 3)]
    assert "malformed update" in (refused[0].reason or ""), refused[0].reason
    assert node.controller.snapshot.version == 2
    assert stored_version(node) == 2


def test_the_resigning_helper_makes_a_valid_update_from_a_valid_body() -> None:
    # Guards the test above: with an in-bounds edit the same signing verifies.
    raw = resigned(update(3).to_bytes(), lambda b: b.update(exploration_share=0.03))
    parsed = ThresholdUpdate.from_bytes(raw)
    assert parsed.body.exploration_share == 0.03
    assert parsed.signature == hmac_sign(KEY, parsed.signed_payload())


def test_after_a_refusal_a_restart_without_a_broker_serves_the_last_good_policy(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    first = start_node(NODE)
    publish(isolated.kafka, update(7, threshold=0.66))
    assert first.subscriber.wait_for_version(7, timeout=30)
    forged = signed_update(update(8, threshold=0.1).body, version=8, key=b"attacker")
    publish(isolated.kafka, forged)
    assert first.subscriber.wait_for_refusals(1, timeout=30)
    first.close(timeout=5)

    offline = isolated.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    again = start_node(NODE, kafka=offline, bootstrap_timeout_s=2.0)

    status = again.subscriber.status()
    assert (status.version, status.source, status.bootstrapped) == (7, "disk", False)
    assert again.controller.should_stop("qa", 10, 0.66).stop
    assert not again.controller.should_stop("qa", 10, 0.2).stop  # never the forged 0.1
