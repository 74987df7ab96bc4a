"""Control-message verification: every bad input becomes a refusal reason."""

from __future__ import annotations

import json

import pytest

from pipeline.node import Limits, verify_update, version_action
from pipeline.node.testing import signed_update
from schemas import PolicyBody, SegmentPolicy, ThresholdUpdate, body_checksum

KEY = b"unit-test-key"
KEYS = {"test-key": KEY}
LIMITS = Limits(max_token_budget=4096, max_exploration_share=0.2, max_canary_share=0.5)


def body(budget: int = 512, exploration: float = 0.05) -> PolicyBody:
    policy = SegmentPolicy(thresholds={"normal": 0.9}, min_tokens=4, token_budget=budget)
    return PolicyBody(segments={"global": policy}, exploration_share=exploration)


def update(version: int = 3, **kw: object) -> ThresholdUpdate:
    return signed_update(body(), version=version, key=KEY, **kw)  # type: ignore[arg-type]


def check(raw: bytes, key: bytes | None = None) -> str | None:
    return verify_update(
        raw, policy_name="default", keys=KEYS, limits=LIMITS, kafka_key=key
    ).refusal


def test_a_signed_update_within_bounds_passes() -> None:
    verdict = verify_update(update().to_bytes(), policy_name="default", keys=KEYS, limits=LIMITS)
    assert verdict.ok and verdict.update is not None
    assert (verdict.policy_name, verdict.version) == ("default", 3)


def test_malformed_bytes_are_refused_with_a_best_effort_identity() -> None:
    verdict = verify_update(
        b"\x00\xffnot json", policy_name="default", keys=KEYS, limits=LIMITS, kafka_key=b"default"
    )
    assert verdict.refusal is not None and "malformed" in verdict.refusal
    assert "version unknown" in verdict.refusal
    assert (verdict.policy_name, verdict.version) == ("default", 1)
    partial = json.dumps({"policy_name": "default", "version": 12}).encode()
    verdict = verify_update(partial, policy_name="default", keys=KEYS, limits=LIMITS)
    assert verdict.version == 12 and not verdict.ok


def test_a_key_with_spaces_does_not_become_the_ack_name() -> None:
    verdict = verify_update(
        b"{}", policy_name="default", keys=KEYS, limits=LIMITS, kafka_key=b"bad key"
    )
    assert verdict.policy_name == "default"


def test_a_wrong_signature_is_refused() -> None:
    forged = signed_update(body(), version=3, key=b"attacker-key")
    assert "does not verify" in (check(forged.to_bytes()) or "")


def test_an_unsigned_update_is_refused() -> None:
    data = update().model_dump(mode="json")
    data["signature"] = "0" * 64
    assert "does not verify" in (check(json.dumps(data).encode()) or "")


def test_an_unknown_key_id_is_refused() -> None:
    assert "unknown signing key id 'other'" in (check(update(key_id="other").to_bytes()) or "")


def test_ed25519_is_refused_with_a_clear_reason() -> None:
    data = update().model_dump(mode="json")
    data["algorithm"] = "ed25519"
    assert "'ed25519' is not supported" in (check(json.dumps(data).encode()) or "")


def test_no_configured_keys_refuses_everything() -> None:
    verdict = verify_update(update().to_bytes(), policy_name="default", keys={}, limits=LIMITS)
    assert "no signing keys" in (verdict.refusal or "")


def test_a_tampered_body_fails_the_checksum() -> None:
    data = update().model_dump(mode="json")
    data["body"]["segments"]["global"]["thresholds"]["normal"] = 0.1
    assert check(json.dumps(data).encode()) == "checksum does not match the canonical body"


def test_a_recomputed_checksum_still_fails_the_signature() -> None:
    good = update()
    evil = body(budget=100)
    data = good.model_dump(mode="json")
    data["body"] = evil.model_dump(mode="json")
    data["checksum"] = body_checksum(good.policy_name, good.version, good.created_at, evil)
    assert "does not verify" in (check(json.dumps(data).encode()) or "")


def test_another_policy_name_is_refused() -> None:
    reason = check(update(policy_name="other-fleet").to_bytes())
    assert reason == "update is for policy 'other-fleet'; this node follows 'default'"


@pytest.mark.parametrize(
    ("policy_body", "needle"),
    [
        (body(budget=5000), "token_budget 5000 exceeds this node's cap 4096"),
        (body(exploration=0.3), "exploration_share 0.3 exceeds"),
        (
            body().model_copy(
                update={
                    "segments": {
                        "global": body().segments["global"],
                        "acme/qa/short": SegmentPolicy(
                            thresholds={"normal": 0.9},
                            min_tokens=4,
                            token_budget=512,
                            exploration_share=0.25,
                        ),
                    }
                }
            ),
            "segment 'acme/qa/short': exploration_share 0.25 exceeds this node's cap 0.2",
        ),
    ],
)
def test_out_of_bounds_updates_are_refused(policy_body: PolicyBody, needle: str) -> None:
    raw = signed_update(policy_body, version=3, key=KEY).to_bytes()
    assert needle in (check(raw) or "")


def test_out_of_range_thresholds_never_parse() -> None:
    data = update().model_dump(mode="json")
    data["body"]["segments"]["global"]["thresholds"]["normal"] = 1.5
    assert "malformed" in (check(json.dumps(data).encode()) or "")


def test_version_actions() -> None:
    u = update(version=5)
    assert version_action(u, 4, "x") == ("apply", None)
    assert version_action(u, 5, u.checksum) == ("replay", None)
    action, reason = version_action(u, 5, "other")
    assert action == "refuse" and "different content" in (reason or "")
    action, reason = version_action(u, 6, "x")
    assert action == "refuse" and reason == "stale version 5: version 6 is applied"
