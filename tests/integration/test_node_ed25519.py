"""Ed25519 control signatures on the real broker: refusals, no downgrade, key rollover."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.config import Settings
from pipeline.node import Node
from pipeline.node.testing import ed25519_update, publish, signed_update
from schemas import ThresholdUpdate
from schemas.signing import Ed25519PrivateKey, public_key_text
from tests.integration._control import acks_matching, global_policy

pytestmark = pytest.mark.integration

OLD, NEW, RETIRED = (Ed25519PrivateKey.generate() for _ in range(3))
HMAC_KEY = b"a-shared-hmac-secret"


def signed(version: int, private_key: Ed25519PrivateKey, key_id: str) -> ThresholdUpdate:
    return ed25519_update(
        global_policy(0.8 - version / 100), version=version, private_key=private_key, key_id=key_id
    )


@pytest.fixture
def node_config() -> dict[str, object]:
    """Nodes trust ``old`` and ``new`` (a rollover in progress) and the revoked ``retired``.

    They also hold an HMAC key, which must not matter: only Ed25519 is allowed.
    """
    keys = {kid: public_key_text(k.public_key()) for kid, k in
            (("old", OLD), ("new", NEW), ("retired", RETIRED))}  # fmt: skip
    return {
        "public_keys": keys,
        "revoked_keys": ["retired"],
        "signing_keys": {"h1": HMAC_KEY.decode()},
    }


def test_revoked_unknown_and_hmac_updates_are_refused_and_never_applied(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    node = start_node("node-a")
    assert node.settings.algorithms() == {"ed25519"}  # the default
    publish(isolated.kafka, signed(1, OLD, "old"))
    assert node.subscriber.wait_for_version(1, timeout=30)

    stranger = Ed25519PrivateKey.generate()
    publish(isolated.kafka, signed(2, RETIRED, "retired"))  # verifies, but revoked
    publish(isolated.kafka, signed(3, stranger, "stranger"))  # unknown key id
    publish(isolated.kafka, signed_update(global_policy(0.1), version=4, key=HMAC_KEY, key_id="h1"))

    assert node.subscriber.wait_for_refusals(3, timeout=30)
    refused = acks_matching(isolated.kafka, lambda a: a.status == "refused", 3)
    reasons = {a.version: a.reason or "" for a in refused}
    assert sorted(reasons) == [2, 3, 4] and {a.node_id for a in refused} == {"node-a"}
    assert reasons[2] == "signing key id 'retired' is revoked"
    assert "unknown signing key id 'stranger'" in reasons[3]
    assert "'hmac-sha256' is not supported" in reasons[4]
    assert node.controller.snapshot.version == 1
    assert node.subscriber.status().applied == 1
    stored = node.subscriber._store.load()
    assert stored is not None and ThresholdUpdate.from_bytes(stored).version == 1


def test_a_key_rollover_keeps_the_node_on_the_latest_version(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    # Nodes already trust old and new; the publisher still signs with old.
    node = start_node("node-r")
    publish(isolated.kafka, signed(1, OLD, "old"))
    assert node.subscriber.wait_for_version(1, timeout=30)
    # The publisher switches to the new key.
    publish(isolated.kafka, signed(2, NEW, "new"))
    assert node.subscriber.wait_for_version(2, timeout=30)
    assert node.subscriber.status().refused == 0
    node.close(timeout=5)

    # The old id is revoked: the node restarts with it in revoked_keys.
    node = start_node("node-r", revoked_keys=["retired", "old"])
    assert (node.subscriber.status().version, node.controller.snapshot.version) == (2, 2)
    publish(isolated.kafka, signed(3, NEW, "new"))
    assert node.subscriber.wait_for_version(3, timeout=30)
    publish(isolated.kafka, signed(4, OLD, "old"))  # the old key, stolen: refused
    assert node.subscriber.wait_for_refusals(1, timeout=30)

    acks = acks_matching(isolated.kafka, lambda a: a.version == 3, 1)
    assert [(a.node_id, a.status) for a in acks] == [("node-r", "applied")]
    refused = acks_matching(isolated.kafka, lambda a: a.status == "refused", 1)
    # Only the update the revoked key signed after the rollover is refused.
    assert [(a.version, a.reason) for a in refused] == [(4, "signing key id 'old' is revoked")]
    assert node.subscriber.status().refused == 1
    assert node.controller.snapshot.version == 3
