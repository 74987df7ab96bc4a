"""The publisher's decision: only newer, READY, approved versions of this policy."""

from __future__ import annotations

import pytest

from pipeline.publisher.gate import Production, decide_publication

OK = {"review_state": "approved", "policy_name": "default"}


def prod(version: int, status: str = "READY", **tags: str) -> Production:
    return Production(version, status, {**OK, **tags})


@pytest.mark.parametrize(
    ("production", "last", "action", "words"),
    [
        (None, 0, "idle", "no production alias"),
        (prod(3), 0, "publish", "newer"),
        (prod(3, review_state="auto_approved"), 2, "publish", "auto_approved"),
        (prod(3), 3, "up_to_date", "is published"),
        (prod(2), 3, "refuse", "older than the published v3"),
        (prod(4, "PENDING_REGISTRATION"), 3, "wait", "not READY"),
        (prod(4, "FAILED_REGISTRATION"), 3, "wait", "FAILED_REGISTRATION"),
        (prod(4, review_state="pending"), 3, "refuse", "pending"),
        (prod(4, review_state="rejected"), 3, "refuse", "only approved"),
        (prod(4, review_state="rolled_back"), 3, "refuse", "rolled_back"),
        (Production(4, "READY", {"policy_name": "default"}), 3, "refuse", "untagged"),
        (prod(4, policy_name="other"), 3, "refuse", "'other'"),
    ],
)
def test_decide(production: Production | None, last: int, action: str, words: str) -> None:
    decision = decide_publication("default", production, last)
    assert decision.action == action
    assert words in decision.reason


def test_an_already_published_version_is_never_refused_or_republished() -> None:
    # Even if its tags changed after publication, the topic already holds it.
    assert (
        decide_publication("default", prod(5, review_state="rolled_back"), 5).action == "up_to_date"
    )
    for last in range(5, 10):
        assert decide_publication("default", prod(5), last).action != "publish"
