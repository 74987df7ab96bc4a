"""Canary review actions: start (by the controller or a reviewer), promote, roll back.

Every move registers a NEW version and points ``production`` at it, so the
publisher sends it and versions on the control topic only grow (ADR 002):
the carrier (production + candidate), the promotion (the candidate's policy
for everyone) or the rollback (the base policy again). The candidate itself
is never production; its tags record how its canary ended and why.
"""

from __future__ import annotations

from typing import Any

from pipeline.audit import AuditAction, AuditSink
from pipeline.optimizer.sequential import CanaryVerdict
from pipeline.registry import names
from pipeline.registry.actions import policy_name_of, rollback
from pipeline.registry.carrier import base_body, canary_body, promoted_body, running_canary
from pipeline.registry.errors import ReviewError
from pipeline.registry.policies import log_policy_version
from pipeline.registry.tags import (
    evidence_summary,
    now_iso,
    promotion_tags,
    record_audit,
    rolled_back_tags,
    set_tags,
    verdict_tags,
)
from pipeline.registry.transitions import check_approve
from pipeline.registry.versions import VersionRecord, aliases, get_version, load_policy
from schemas import PolicyBody


def _register(
    client: Any,
    *,
    experiment: str,
    model_name: str,
    policy_name: str,
    body: PolicyBody,
    tags: dict[str, str],
    run_name: str,
    why: str,
    actor: str = names.CONTROLLER,
    state: names.ReviewState = "auto_approved",
) -> VersionRecord:
    at = now_iso()
    all_tags = {
        **promotion_tags(actor, why[: names.MAX_TAG_CHARS], state, at),
        names.T_PROPOSED_AT: at,
        names.T_PROPOSAL_REASON: why[: names.MAX_TAG_CHARS],
        **tags,
    }
    _, record = log_policy_version(
        client,
        experiment=experiment,
        model_name=model_name,
        policy_name=policy_name,
        body=body,
        params={k: v[:6000] for k, v in tags.items()},
        metrics={},
        tags=all_tags,
        run_name=run_name,
        description=why,
    )
    client.set_registered_model_alias(model_name, names.PRODUCTION, str(record.version))
    return get_version(client, model_name, record.version)


def start_canary(
    client: Any,
    *,
    experiment: str,
    policy_name: str,
    candidate: VersionRecord,
    candidate_body: PolicyBody,
    base_version: int | None,
    base: PolicyBody,
    share: float,
    audit: AuditSink | None,
    actor: str = names.CONTROLLER,
    reason: str = "",
) -> VersionRecord:
    """Register and make production a carrier serving ``candidate`` to ``share`` of requests.

    ``actor`` is who decided: the controller (the carrier is ``auto_approved``)
    or a reviewer (``approved``, with their ``reason`` first).
    """
    body = canary_body(base, candidate_body, candidate.version, share)
    why = (
        f"canary of v{candidate.version} on {share:.0%} of requests, "
        f"production stays v{base_version or 0}"
    )
    if reason:
        why = f"{reason}; {why}"
    by_controller = actor == names.CONTROLLER
    state: names.ReviewState = "auto_approved" if by_controller else "approved"
    action: AuditAction = "auto_approved" if by_controller else "approved"
    carrier = _register(
        client,
        experiment=experiment,
        model_name=candidate.model_name,
        policy_name=policy_name,
        body=body,
        tags={
            names.T_CANARY_OF: str(candidate.version),
            names.T_CANARY_BASE: str(base_version or 0),
        },
        run_name=f"{policy_name}-canary-v{candidate.version}",
        why=why,
        actor=actor,
        state=state,
    )
    set_tags(
        client,
        candidate,
        {names.T_CANARY_STATE: "running", names.T_CANARY_CARRIER: str(carrier.version)},
    )
    record_audit(audit, action, carrier, policy_name=policy_name, actor=actor, why=why)
    return carrier


def approve_canary(
    client: Any,
    model_name: str,
    version: int,
    *,
    experiment: str,
    share: float,
    by: str,
    reason: str,
    audit: AuditSink | None,
) -> VersionRecord:
    """A reviewer's approval of a pending version as a canary beside production.

    The version stays pending: production becomes a carrier serving it to
    ``share`` of requests, and the controller's guardrail monitor promotes or
    rolls it back as it does for the canaries it starts itself. Returns the carrier.

    Raises:
        ReviewError: the version may not be approved (the rules of ``approve``),
            there is no production version to compare it with, or a canary is
            already running.
        PolicyArtifactError: if a policy is missing or invalid.
    """
    if not 0 < share < 1:
        msg = f"canary share must be between 0 and 1 (exclusive), got {share}"
        raise ValueError(msg)
    record = get_version(client, model_name, version)
    current = aliases(client, model_name).get(names.PRODUCTION)
    check_approve(record.view(), current)
    if current is None:
        msg = (
            f"{model_name} has no production version for a canary to run beside: "
            "approve it without --canary"
        )
        raise ReviewError(msg)
    production = load_policy(client, get_version(client, model_name, current))
    running = running_canary(production)
    if running is not None:
        msg = (
            f"a canary of v{running} is running on production v{current}: wait for its "
            "verdict or roll it back first"
        )
        raise ReviewError(msg)
    candidate_body = load_policy(client, record)
    if running_canary(candidate_body) is not None:
        msg = f"version {version} carries a canary itself; approve a plain policy"
        raise ReviewError(msg)
    at = now_iso()
    set_tags(client, record, {names.T_WHO: by, names.T_WHEN: at, names.T_WHY: reason})
    return start_canary(
        client,
        experiment=experiment,
        policy_name=policy_name_of(record),
        candidate=record,
        candidate_body=candidate_body,
        base_version=current,
        base=base_body(production),
        share=share,
        audit=audit,
        actor=by,
        reason=reason,
    )


def promote_canary(
    client: Any,
    *,
    experiment: str,
    policy_name: str,
    carrier: VersionRecord,
    carrier_body: PolicyBody,
    verdict: CanaryVerdict,
    audit: AuditSink | None,
) -> VersionRecord:
    """Serve the candidate's policy to everyone, as a new production version."""
    candidate = get_version(client, carrier.model_name, int(carrier.tags[names.T_CANARY_OF]))
    why = f"canary of v{candidate.version} passed: {verdict.reason}"
    promoted = _register(
        client,
        experiment=experiment,
        model_name=carrier.model_name,
        policy_name=policy_name,
        body=promoted_body(carrier_body),
        tags={
            names.T_PROMOTES: str(candidate.version),
            names.T_CANARY_EVIDENCE: evidence_summary(verdict),
        },
        run_name=f"{policy_name}-promote-v{candidate.version}",
        why=why,
    )
    set_tags(
        client,
        candidate,
        {
            names.T_REVIEW_STATE: "approved",
            names.T_APPROVED_BY: names.CONTROLLER,
            names.T_APPROVED_AT: now_iso(),
            names.T_APPROVE_REASON: why[: names.MAX_TAG_CHARS],
            names.T_REPLACED_BY: str(promoted.version),
            **verdict_tags(verdict, "promoted"),
        },
    )
    record_audit(
        audit, "approved", promoted, policy_name=policy_name, actor=names.CONTROLLER, why=why
    )
    return promoted


def rollback_canary(
    client: Any,
    *,
    experiment: str,
    policy_name: str,
    carrier: VersionRecord,
    carrier_body: PolicyBody,
    verdict: CanaryVerdict,
    audit: AuditSink | None,
) -> VersionRecord:
    """Restore the base policy as a new production version; record why on every version."""
    candidate = get_version(client, carrier.model_name, int(carrier.tags[names.T_CANARY_OF]))
    base = int(carrier.tags.get(names.T_CANARY_BASE, "0"))
    why = f"canary of v{candidate.version} rolled back: {verdict.reason}"
    evidence = {names.T_CANARY_EVIDENCE: evidence_summary(verdict)}
    if base > 0:
        done = rollback(
            client,
            carrier.model_name,
            experiment=experiment,
            by=names.CONTROLLER,
            reason=why[: names.MAX_TAG_CHARS],
            to=base,
            audit=audit,
        )
        restored = done.version
        set_tags(client, restored, evidence)
    else:
        # Nothing was served before the canary but the safe default: restore that.
        restored = _register(
            client,
            experiment=experiment,
            model_name=carrier.model_name,
            policy_name=policy_name,
            body=base_body(carrier_body),
            tags={names.T_ROLLBACK_OF: str(carrier.version), names.T_RESTORES: "0", **evidence},
            run_name=f"{policy_name}-rollback-v{carrier.version}-to-default",
            why=why,
        )
        reason = why[: names.MAX_TAG_CHARS]
        set_tags(
            client, carrier, rolled_back_tags(names.CONTROLLER, now_iso(), reason, restored.version)
        )
        record_audit(
            audit,
            "rolled_back",
            restored,
            policy_name=policy_name,
            actor=names.CONTROLLER,
            why=why,
        )
    set_tags(
        client,
        candidate,
        {
            **rolled_back_tags(names.CONTROLLER, now_iso(), why[: names.MAX_TAG_CHARS], None),
            **verdict_tags(verdict, "rolled_back"),
        },
    )
    set_tags(client, carrier, evidence)
    if names.CANDIDATE in _aliases_of(client, carrier.model_name, candidate.version):
        client.delete_registered_model_alias(carrier.model_name, names.CANDIDATE)
    return get_version(client, carrier.model_name, restored.version)


def _aliases_of(client: Any, model_name: str, version: int) -> list[str]:
    return [alias for alias, v in aliases(client, model_name).items() if v == version]
