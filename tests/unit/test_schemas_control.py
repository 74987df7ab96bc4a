"""Policy bodies, threshold updates, acks, checksums and HMAC signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    PolicyAck,
    PolicyBody,
    Segment,
    SegmentPolicy,
    ThresholdUpdate,
    body_checksum,
    canonical_body_bytes,
    hmac_sign,
    hmac_verify,
)
from schemas.examples import EXAMPLE_HMAC_KEY, EXAMPLE_TS, policy_body, threshold_update


def body_with(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(policy_body().model_dump_json())
    data.update(change)
    return data


# --- policy ------------------------------------------------------------------


def test_segment_policy_rules() -> None:
    base = {"thresholds": {"normal": 0.9}, "min_tokens": 4, "token_budget": 64}
    assert SegmentPolicy.model_validate(base).schedule == ()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"thresholds": {"peak": 0.8}}, "must contain 'normal'"),
        ({"thresholds": {"normal": 1.2}}, "less than or equal"),
        ({"thresholds": {"normal": 0.9, "rush": 0.5}}, "offpeak"),
        ({"min_tokens": 65}, "min_tokens exceeds"),
        ({"token_budget": 0}, "greater than or equal"),
        ({"schedule": [(32, 0.8), (16, 0.7)]}, "strictly increasing"),
        ({"schedule": [(16, 0.8), (16, 0.7)]}, "strictly increasing"),
        ({"schedule": [(16, 0.8, 1)]}, "at most 2 items"),
    ]
    for change, match in cases:
        with pytest.raises(ValidationError, match=match):
            SegmentPolicy.model_validate({**base, **change})


def test_threshold_at_follows_min_tokens_mode_and_schedule() -> None:
    policy = SegmentPolicy(
        thresholds={"normal": 0.9, "peak": 0.8},
        min_tokens=8,
        token_budget=256,
        schedule=((64, 0.7), (128, 0.6)),
    )
    assert policy.threshold_at(7) is None
    assert policy.threshold_at(8) == 0.9
    assert policy.threshold_at(8, "peak") == 0.8
    assert policy.threshold_at(8, "offpeak") == 0.9  # no offpeak entry: falls back to normal
    assert policy.threshold_at(64, "peak") == 0.7
    assert policy.threshold_at(200) == 0.6


def test_policy_body_rules() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"segments": {"qa": body_with()["segments"]["qa"]}}, "must contain 'global'"),
        ({"segments": {**body_with()["segments"], "acme/qa": {}}}, "should match pattern"),
        ({"exploration_share": 0.6}, "less than or equal to 0.5"),
        ({"canary_share": -0.1}, "greater than or equal"),
        ({"candidate_version": None}, "candidate_segments is required iff"),
        ({"canary_share": 0.0}, "candidate_segments is required iff"),
        ({"candidate_segments": None}, "candidate_segments is required iff"),
        ({"candidate_segments": {"qa": body_with()["segments"]["qa"]}}, "must contain 'global'"),
    ]
    for change, match in cases:
        with pytest.raises(ValidationError, match=match):
            PolicyBody.model_validate_json(json.dumps(body_with(**change)))


def test_policy_for_picks_the_most_specific_segment() -> None:
    body = policy_body()
    acme_short = Segment(task="qa", length_bucket="short", tenant="acme")
    other_long = Segment(task="qa", length_bucket="long", tenant="other")
    summary = Segment(task="summary", length_bucket="long", tenant="acme")
    assert body.policy_for(acme_short) is body.segments["acme/qa/short"]
    assert body.policy_for(other_long) is body.segments["qa"]
    assert body.policy_for(summary) is body.segments["global"]
    assert body.candidate_segments is not None
    assert body.policy_for(acme_short, candidate=True) is body.candidate_segments["global"]


# --- checksum and signature ---------------------------------------------------


def test_canonical_bytes_are_deterministic_compact_and_sorted() -> None:
    payload = canonical_body_bytes("default", 4, EXAMPLE_TS, policy_body())
    assert payload == canonical_body_bytes("default", 4, EXAMPLE_TS, policy_body())
    assert b" " not in payload
    assert payload.startswith(b'{"body":{"canary_share":0.1,')
    assert b'"created_at":"2024-05-01T12:00:00Z","policy_name":"default","version":4}' in payload


def test_checksum_is_stable_across_offsets_and_changes_with_the_body() -> None:
    same_instant = EXAMPLE_TS.astimezone(timezone(timedelta(hours=-7)))
    checksum = body_checksum("default", 4, EXAMPLE_TS, policy_body())
    assert len(checksum) == 64
    assert checksum == body_checksum("default", 4, same_instant, policy_body())
    changed = policy_body().model_copy(update={"exploration_share": 0.03})
    assert body_checksum("default", 4, EXAMPLE_TS, changed) != checksum
    assert body_checksum("default", 5, EXAMPLE_TS, policy_body()) != checksum
    assert body_checksum("other", 4, EXAMPLE_TS, policy_body()) != checksum
    later = EXAMPLE_TS + timedelta(microseconds=1)
    assert body_checksum("default", 4, later, policy_body()) != checksum


def test_threshold_update_refuses_a_checksum_that_does_not_match() -> None:
    data = json.loads(threshold_update().to_bytes())
    data["body"]["exploration_share"] = 0.3
    with pytest.raises(ValidationError, match="checksum does not match"):
        ThresholdUpdate.model_validate_json(json.dumps(data))
    data = json.loads(threshold_update().to_bytes())
    data["checksum"] = data["checksum"].upper()
    with pytest.raises(ValidationError, match="should match pattern"):
        ThresholdUpdate.model_validate_json(json.dumps(data))


def test_hmac_signature_verifies_and_rejects_tampering() -> None:
    update = threshold_update()
    payload = update.signed_payload()
    assert update.algorithm == "hmac-sha256"
    assert hmac_verify(EXAMPLE_HMAC_KEY, payload, update.signature)
    assert not hmac_verify(EXAMPLE_HMAC_KEY, payload.replace(b"0.1", b"0.9"), update.signature)
    assert not hmac_verify(b"another-key", payload, update.signature)
    assert not hmac_verify(EXAMPLE_HMAC_KEY, payload, "0" * 64)
    assert not hmac_verify(EXAMPLE_HMAC_KEY, payload, "not hex")
    assert not hmac_verify(EXAMPLE_HMAC_KEY, payload, update.signature[:-2])
    assert hmac_sign(EXAMPLE_HMAC_KEY, payload) == update.signature
    with pytest.raises(ValueError, match="empty"):
        hmac_sign(b"", payload)


def test_signed_payload_survives_the_wire() -> None:
    update = threshold_update()
    again = ThresholdUpdate.from_bytes(update.to_bytes())
    assert again.signed_payload() == update.signed_payload()
    assert hmac_verify(EXAMPLE_HMAC_KEY, again.signed_payload(), again.signature)


# --- acks ----------------------------------------------------------------------


def test_policy_ack_fields_follow_the_status() -> None:
    base: dict[str, Any] = {
        "node_id": "node-a",
        "policy_name": "default",
        "version": 4,
        "ts": EXAMPLE_TS,
    }
    refused = PolicyAck(**base, status="refused", reason="bad signature")
    assert refused.applied_at is None
    now = datetime.now(UTC)
    cases: list[dict[str, Any]] = [
        {"status": "applied"},
        {"status": "applied", "applied_at": now, "reason": "ok"},
        {"status": "refused"},
        {"status": "refused", "reason": ""},
        {"status": "refused", "reason": "stale", "applied_at": now},
    ]
    for fields in cases:
        with pytest.raises(ValidationError, match="required iff"):
            PolicyAck.model_validate({**base, **fields})
