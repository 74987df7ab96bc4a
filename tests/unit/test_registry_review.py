"""Review rules: production only moves forward; rollback picks a served version."""

from __future__ import annotations

import pytest

from pipeline.registry.errors import ReviewError
from pipeline.registry.transitions import VersionView, check_approve, check_reject, rollback_target


def v(
    version: int, state: str | None = "pending", *, served: bool = False, **kw: str
) -> VersionView:
    tags = dict(kw)
    if state is not None:
        tags["review_state"] = state
    if served:
        tags["promoted_at"] = "2026-01-01T00:00:00+00:00"
    return VersionView(version, tags=tags)


def test_a_pending_version_newer_than_production_is_approved() -> None:
    check_approve(v(5), production=4)
    check_approve(v(1), production=None)


def test_an_interrupted_approval_can_be_repeated() -> None:
    check_approve(v(5, "approved"), production=4)


@pytest.mark.parametrize(
    ("target", "production", "match"),
    [
        (v(3), 4, "older than production version 4"),
        (v(4, "approved"), 4, "already production"),
        (v(5, "rejected"), 4, "rejected"),
        (v(5, "rolled_back"), 4, "rolled_back"),
        (v(5, None), 4, "untagged"),
        (VersionView(5, "PENDING_REGISTRATION", {"review_state": "pending"}), 4, "not READY"),
    ],
)
def test_approvals_that_would_break_monotonic_versions_or_review_are_refused(
    target: VersionView, production: int | None, match: str
) -> None:
    with pytest.raises(ReviewError, match=match):
        check_approve(target, production)


def test_reject_takes_pending_versions_but_not_production() -> None:
    check_reject(v(5), production=4)
    with pytest.raises(ReviewError, match="rollback"):
        check_reject(v(4, "approved"), production=4)
    with pytest.raises(ReviewError, match="cannot reject"):
        check_reject(v(3, "rolled_back"), production=4)


def test_rollback_restores_the_newest_earlier_served_version() -> None:
    versions = [
        v(1, "approved", served=True),
        v(2, "auto_approved", served=True),
        v(3, "rejected"),
        v(4, "rolled_back", served=True),
        v(5, "approved", served=True),
        v(6),
    ]
    bad, good = rollback_target(versions, production=5)
    assert (bad.version, good.version) == (5, 2)


def test_a_published_tag_counts_as_served() -> None:
    versions = [v(1, "approved", published_at="x"), v(2, "approved", served=True)]
    assert rollback_target(versions, production=2)[1].version == 1


def test_rollback_to_an_explicit_version_must_have_been_served() -> None:
    versions = [v(1, "approved", served=True), v(2, "rejected"), v(3, "approved", served=True)]
    assert rollback_target(versions, production=3, to=1)[1].version == 1
    with pytest.raises(ReviewError, match="never in production"):
        rollback_target(versions, production=3, to=2)
    with pytest.raises(ReviewError, match="production already"):
        rollback_target(versions, production=3, to=3)
    with pytest.raises(ReviewError, match="does not exist"):
        rollback_target(versions, production=3, to=9)


def test_rollback_needs_a_production_and_something_to_restore() -> None:
    with pytest.raises(ReviewError, match="nothing to roll back"):
        rollback_target([v(1)], production=None)
    with pytest.raises(ReviewError, match="no earlier served version"):
        rollback_target([v(1, "approved", served=True)], production=1)
