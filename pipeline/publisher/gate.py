"""What the publisher does with the version ``production`` points at (pure).

Versions on the control topic only grow: nodes refuse a version not above
the one they applied. So the publisher publishes only a version above the
last one on the topic, and only when it is complete (``READY``) and approved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline.registry.names import PUBLISHABLE, T_POLICY_NAME, T_REVIEW_STATE
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
