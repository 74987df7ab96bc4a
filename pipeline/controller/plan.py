"""Pure decisions of the controller: what a cycle does, what a canary serves, what to tag.

A canary is carried by a production version whose body holds both policies
(``segments`` for production traffic, ``candidate_segments`` for the
``canary_share`` of requests, ``candidate_version`` naming the candidate):
see docs/adr-003-canary.md. Everything here is a function of values, so the
rules are unit-tested without MLflow or ClickHouse.
"""

from __future__ import annotations

from typing import Literal

from pipeline.node.verify import Limits, bounds_problem
from pipeline.optimizer.sequential import Verdict
from pipeline.optimizer.spec import PolicySpec
from schemas import PolicyBody

MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value
ACTOR = "controller"
"""The actor of every move the controller makes (tags ``who``, audit ``actor``)."""

# Tags the controller adds to model versions (beside pipeline.registry.names).
T_CANARY_OF = "canary_of"
"""On a carrier version: the candidate version it serves to the canary share."""
T_CANARY_BASE = "canary_base"
"""On a carrier version: the production version it started from (0: the safe default)."""
T_CANARY_STATE = "canary_state"
"""On a candidate: ``running``, ``promoted`` or ``rolled_back``."""
T_CANARY_CARRIER = "canary_carrier"
"""On a candidate: the version that carried its canary."""
T_CANARY_VERDICT = "canary_verdict"
T_CANARY_EVIDENCE = "canary_evidence"
T_PROMOTES = "promotes"
"""On a promotion version: the candidate whose policy it serves to everyone."""

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


def running_canary(body: PolicyBody) -> int | None:
    """The candidate version ``body`` serves as a canary, or None."""
    if body.candidate_version is None or body.candidate_segments is None:
        return None
    return body.candidate_version if body.canary_share > 0 else None


def base_body(body: PolicyBody) -> PolicyBody:
    """``body`` without any canary: what production traffic gets."""
    return PolicyBody(segments=body.segments, exploration_share=body.exploration_share)


def canary_body(
    production: PolicyBody, candidate: PolicyBody, candidate_version: int, share: float
) -> PolicyBody:
    """The carrier: production's segments, plus the candidate's for ``share`` of requests."""
    return PolicyBody(
        segments=production.segments,
        exploration_share=production.exploration_share,
        canary_share=share,
        candidate_version=candidate_version,
        candidate_segments=candidate.segments,
    )


def promoted_body(carrier: PolicyBody) -> PolicyBody:
    """The candidate's policy for every request, ending the canary."""
    if carrier.candidate_segments is None:
        msg = "the production version carries no canary candidate"
        raise ValueError(msg)
    return PolicyBody(
        segments=carrier.candidate_segments, exploration_share=carrier.exploration_share
    )


def summary(verdict: Verdict) -> str:
    """One line per metric: pairs, mean difference (positive: canary worse), e-values."""
    parts = [
        f"{e.metric}: {e.pairs} pairs, diff {e.mean_difference:+.4f} (margin {e.margin}), "
        f"harm e={e.harm_e:.3g}, safe e={e.safe_e:.3g}"
        for e in verdict.evidence
    ]
    return "; ".join(parts)[:MAX_TAG_CHARS]


def verdict_tags(verdict: Verdict, state: str) -> dict[str, str]:
    """Tags recording a canary's end on its candidate version."""
    return {
        T_CANARY_STATE: state,
        T_CANARY_VERDICT: f"{verdict.action}: {verdict.reason}"[:MAX_TAG_CHARS],
        T_CANARY_EVIDENCE: summary(verdict),
    }
