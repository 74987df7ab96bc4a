"""Review rules: which action is allowed on which version (pure, no MLflow).

Versions only grow on the control topic (nodes refuse a version <= the one
they applied), so ``production`` may only move forward: approving a version
older than production is refused, and a rollback is a new version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.registry import names
from pipeline.registry.errors import ReviewError

READY = "READY"
"""MLflow's status of a model version whose artifact is in place."""


@dataclass(frozen=True, slots=True)
class VersionView:
    """What the rules need to know about one model version."""

    version: int
    status: str = READY
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def review_state(self) -> str | None:
        """The ``review_state`` tag, or None when missing."""
        return self.tags.get(names.T_REVIEW_STATE)

    @property
    def served(self) -> bool:
        """True when this version was ever promoted to or published as production."""
        return names.T_PROMOTED_AT in self.tags or names.T_PUBLISHED_AT in self.tags


def check_approve(target: VersionView, production: int | None) -> None:
    """Raise unless ``target`` may be approved and made production.

    Allowed from ``pending``, and again from ``approved`` while the version is
    not production (so an approval interrupted before the alias moved can be
    repeated). The version must be newer than production.

    Raises:
        ReviewError: with the reason.
    """
    state = target.review_state
    if target.status != READY:
        msg = f"version {target.version} is {target.status}, not {READY}: wait and retry"
        raise ReviewError(msg)
    if production == target.version:
        msg = f"version {target.version} is already production"
        raise ReviewError(msg)
    if state not in {"pending", "approved"}:
        msg = f"version {target.version} is {state or 'untagged'}; only pending ones are approved"
        raise ReviewError(msg)
    if production is not None and target.version < production:
        msg = (
            f"version {target.version} is older than production version {production}; nodes "
            "refuse older versions: use `pipeline policy rollback --to` to restore it"
        )
        raise ReviewError(msg)


def check_reject(target: VersionView, production: int | None) -> None:
    """Raise unless ``target`` may be rejected (a pending version, not production).

    Raises:
        ReviewError: with the reason.
    """
    if production == target.version:
        msg = f"version {target.version} is production: use `pipeline policy rollback`"
        raise ReviewError(msg)
    if target.review_state not in {"pending", "approved"}:
        msg = f"version {target.version} is {target.review_state or 'untagged'}; cannot reject it"
        raise ReviewError(msg)


def rollback_target(
    versions: Iterable[VersionView], production: int | None, to: int | None = None
) -> tuple[VersionView, VersionView]:
    """The production version to roll back and the good version to restore.

    The default good version is the newest version below production that was
    once served and is not itself rolled back. ``to`` names one explicitly; it
    must have been served too (restoring a never-served version is not a
    rollback: approve a new proposal instead).

    Raises:
        ReviewError: if nothing is in production or there is nothing to restore.
    """
    by_version = {v.version: v for v in versions}
    if production is None or production not in by_version:
        msg = "no version is in production: there is nothing to roll back"
        raise ReviewError(msg)
    bad = by_version[production]
    if to is not None:
        good = by_version.get(to)
        if good is None:
            msg = f"version {to} does not exist"
            raise ReviewError(msg)
        if to == production:
            msg = f"version {to} is production already: name an earlier version"
            raise ReviewError(msg)
        if not good.served or good.status != READY:
            msg = f"version {to} was never in production; only served versions can be restored"
            raise ReviewError(msg)
        return bad, good
    earlier = [
        v
        for v in by_version.values()
        if v.version < production
        and v.served
        and v.status == READY
        and v.review_state != "rolled_back"
    ]
    if not earlier:
        msg = (
            f"no earlier served version to restore below version {production}: "
            "register and approve a safe policy instead"
        )
        raise ReviewError(msg)
    return bad, max(earlier, key=lambda v: v.version)
