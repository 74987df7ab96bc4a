"""Pure decisions of the controller: whether a cycle may register, and where a proposal goes.

Functions of values, unit-tested without MLflow or ClickHouse. What a canary
carrier serves is :mod:`pipeline.registry.carrier`.
"""

from __future__ import annotations

from typing import Literal

from pipeline.node.verify import Limits, bounds_problem
from pipeline.optimizer.spec import PolicySpec
from schemas import PolicyBody

Route = Literal["production", "canary", "pending"]


def budget_problem(spec: PolicySpec, max_token_budget: int) -> str | None:
    """Why the spec's budgets exceed the nodes' cap (every node would refuse), or None."""
    for key, settings in sorted(spec.segments.settings.items()):
        if settings.token_budget > max_token_budget:
            return (
                f"spec {spec.name!r}: segment {key!r} has token_budget {settings.token_budget}, "
                f"above the nodes' max_token_budget {max_token_budget}"
            )
    return None


def body_problem(body: PolicyBody, limits: Limits) -> str | None:
    """Why nodes with ``limits`` would refuse ``body``, or None: checked before registering."""
    return bounds_problem(body, limits)


def route(*, within_bounds: bool, auto_approve: bool, canary_share: float) -> Route:
    """Where a freshly registered proposal goes.

    Inside the auto-approve bounds (and with the operator's switch on) it goes
    to production at once when the spec has no canary, else to a canary;
    otherwise it waits for a reviewer.
    """
    if not (within_bounds and auto_approve):
        return "pending"
    return "canary" if canary_share > 0 else "production"
