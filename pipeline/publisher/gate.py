"""What the publisher does with the version ``production`` points at (pure).

Versions on the control topic only grow: nodes refuse a version not above
the one they applied. So the publisher publishes only a version above the
last one on the topic, and only when it is complete (``READY``) and approved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline.registry.names import (
    AUTO,
    CONTROLLER,
    PUBLISHABLE,
    T_APPROVED_BY,
    T_CANARY_OF,
    T_POLICY_NAME,
    T_PROMOTES,
    T_REVIEW_STATE,
    T_ROLLBACK_OF,
)
from pipeline.registry.transitions import READY

Action = Literal["publish", "up_to_date", "wait", "refuse", "idle"]
"""publish it; already published; not ready yet (try again); never publish it; nothing to do."""


@dataclass(frozen=True, slots=True)
class Production:
    """The version the ``production`` alias points at."""

    version: int
    status: str = READY
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishDecision:
    """The action and why."""

    action: Action
    reason: str


def decide_publication(
    policy_name: str, production: Production | None, last_published: int
) -> PublishDecision:
    """Decide about ``production`` given the newest version on the control topic.

    Args:
        policy_name: The policy being published (the version must carry it).
        production: The aliased version, or None when the alias is not set.
        last_published: Newest version of this policy on the control topic (0: none).
    """
    if production is None:
        return PublishDecision("idle", "no production alias")
    v = production.version
    if v < last_published:
        return PublishDecision(
            "refuse",
            f"production points to v{v}, older than the published v{last_published}; "
            "nodes refuse older versions: use `pipeline policy rollback`",
        )
    if v == last_published:
        return PublishDecision("up_to_date", f"v{v} is published")
    if production.status != READY:
        return PublishDecision("wait", f"v{v} is {production.status}, not {READY}")
    state = production.tags.get(T_REVIEW_STATE)
    if state not in PUBLISHABLE:
        return PublishDecision(
            "refuse", f"v{v} is {state or 'untagged'}; only approved versions are published"
        )
    tagged = production.tags.get(T_POLICY_NAME)
    if tagged != policy_name:
        return PublishDecision(
            "refuse", f"v{v} is tagged for policy {tagged or 'none'!r}, not {policy_name!r}"
        )
    return PublishDecision(
        "publish", f"v{v} is {state} and newer than the published v{last_published}"
    )


AUTOMATIC_ACTORS = frozenset({AUTO, CONTROLLER})
"""Who the controller's own approvals name: a proposal's auto-approval, the canary monitor."""
REVIEWER_LEVELS = frozenset({"EDIT", "MANAGE"})
"""The permissions on a policy's registered model that make a user its reviewer."""
_AUTOMATIC_RUN_PARAMS = (T_CANARY_OF, T_PROMOTES, T_ROLLBACK_OF)


def automatic_registration(params: Mapping[str, str]) -> bool:
    """True when a version's run params record an automatic registration.

    A proposal within the spec's auto-approve bounds logs ``auto_approve=True``;
    the canary monitor's carriers, promotions and rollbacks log what they move.
    """
    if params.get("auto_approve") == "True":
        return True
    return any(key in params for key in _AUTOMATIC_RUN_PARAMS)


def approver_refusal(
    version: int,
    model_name: str,
    tags: Mapping[str, str],
    *,
    service_account: str,
    approver_level: str | None,
    automatic: bool,
) -> str | None:
    """Why the approval of ``version`` does not count, or None when it does.

    Args:
        version: The version the ``production`` alias points at.
        model_name: Its registered model.
        tags: Its tags (``approved_by`` names the approver).
        service_account: The controller's MLflow user.
        approver_level: The approver's permission on ``model_name`` now, None when
            MLflow has no such user (not asked for automatic actors).
        automatic: Whether its run records an automatic registration.
    """
    who = tags.get(T_APPROVED_BY, "")
    if not who:
        return f"v{version} records no approver ({T_APPROVED_BY}); approve it as a reviewer"
    if who in AUTOMATIC_ACTORS:
        if automatic:
            return None
        return (
            f"v{version} names the controller ({who}) as approver but its run records no "
            "automatic registration (auto-approve bounds or a canary move): "
            "a reviewer must approve it"
        )
    if who == service_account:
        return (
            f"v{version} was approved in the name of the service account {who}, which approves "
            "only automatically: a reviewer must approve it"
        )
    if approver_level is None:
        return f"v{version} was approved by {who!r}, who is not an MLflow user"
    if approver_level not in REVIEWER_LEVELS:
        return (
            f"v{version} was approved by {who}, who holds {approver_level} on {model_name}, "
            "not the reviewer permission (EDIT or MANAGE)"
        )
    return None
