"""Starting, promoting and rolling back a canary in the MLflow registry.

Every move registers a NEW version and points ``production`` at it, so the
publisher sends it and versions on the control topic only grow (ADR 002):
the carrier (production + candidate), the promotion (the candidate's policy
for everyone) or the rollback (the base policy again). The candidate itself
is never production; its tags record how its canary ended and why.
"""

from __future__ import annotations

from typing import Any

from pipeline.control.audit import AuditAction, AuditEvent, AuditSink
from pipeline.controller import plan
from pipeline.optimizer.sequential import Verdict
from pipeline.registry import names
from pipeline.registry.actions import rollback
from pipeline.registry.policies import log_policy_version, now_iso, promotion_tags
from pipeline.registry.versions import VersionRecord, get_version
from schemas import PolicyBody


def _tag(client: Any, record: VersionRecord, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(record.model_name, str(record.version), key, value)


def _audit(
    audit: AuditSink | None, action: AuditAction, record: VersionRecord, policy: str, why: str
) -> None:
    if audit is not None:
        audit(
            AuditEvent.new(
                action,
                policy_name=policy,
                model_name=record.model_name,
                version=record.version,
                actor=plan.ACTOR,
                reason=why[:1000],
            )
        )


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
) -> VersionRecord:
    at = now_iso()
    all_tags = {
        **promotion_tags(plan.ACTOR, why[: plan.MAX_TAG_CHARS], "auto_approved", at),
        names.T_PROPOSED_AT: at,
        names.T_PROPOSAL_REASON: why[: plan.MAX_TAG_CHARS],
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
) -> VersionRecord:
    """Register and make production a carrier serving ``candidate`` to ``share`` of requests."""
    body = plan.canary_body(base, candidate_body, candidate.version, share)
    why = (
        f"canary of v{candidate.version} on {share:.0%} of requests, "
        f"production stays v{base_version or 0}"
    )
    carrier = _register(
        client,
        experiment=experiment,
        model_name=candidate.model_name,
        policy_name=policy_name,
        body=body,
        tags={plan.T_CANARY_OF: str(candidate.version), plan.T_CANARY_BASE: str(base_version or 0)},
        run_name=f"{policy_name}-canary-v{candidate.version}",
        why=why,
    )
    _tag(
        client,
        candidate,
        {plan.T_CANARY_STATE: "running", plan.T_CANARY_CARRIER: str(carrier.version)},
    )
    _audit(audit, "auto_approved", carrier, policy_name, why)
    return carrier


def promote_canary(
    client: Any,
    *,
    experiment: str,
    policy_name: str,
    carrier: VersionRecord,
    carrier_body: PolicyBody,
    verdict: Verdict,
    audit: AuditSink | None,
) -> VersionRecord:
    """Serve the candidate's policy to everyone, as a new production version."""
    candidate = get_version(client, carrier.model_name, int(carrier.tags[plan.T_CANARY_OF]))
    why = f"canary of v{candidate.version} passed: {verdict.reason}"
    promoted = _register(
        client,
        experiment=experiment,
        model_name=carrier.model_name,
        policy_name=policy_name,
        body=plan.promoted_body(carrier_body),
        tags={
            plan.T_PROMOTES: str(candidate.version),
            plan.T_CANARY_EVIDENCE: plan.summary(verdict),
        },
        run_name=f"{policy_name}-promote-v{candidate.version}",
        why=why,
    )
    _tag(
        client,
        candidate,
        {
            names.T_REVIEW_STATE: "approved",
            names.T_APPROVED_BY: plan.ACTOR,
            names.T_APPROVED_AT: now_iso(),
            names.T_APPROVE_REASON: why[: plan.MAX_TAG_CHARS],
            names.T_REPLACED_BY: str(promoted.version),
            **plan.verdict_tags(verdict, "promoted"),
        },
    )
    _audit(audit, "approved", promoted, policy_name, why)
    return promoted


def rollback_canary(
    client: Any,
    *,
    experiment: str,
    policy_name: str,
    carrier: VersionRecord,
    carrier_body: PolicyBody,
    verdict: Verdict,
    audit: AuditSink | None,
) -> VersionRecord:
    """Restore the base policy as a new production version; record why on every version."""
    candidate = get_version(client, carrier.model_name, int(carrier.tags[plan.T_CANARY_OF]))
    base = int(carrier.tags.get(plan.T_CANARY_BASE, "0"))
    why = f"canary of v{candidate.version} rolled back: {verdict.reason}"
    evidence = {plan.T_CANARY_EVIDENCE: plan.summary(verdict)}
    if base > 0:
        done = rollback(
            client,
            carrier.model_name,
            experiment=experiment,
            by=plan.ACTOR,
            reason=why[: plan.MAX_TAG_CHARS],
            to=base,
            audit=audit,
        )
        restored = done.version
        _tag(client, restored, evidence)
    else:
        # Nothing was served before the canary but the safe default: restore that.
        restored = _register(
            client,
            experiment=experiment,
            model_name=carrier.model_name,
            policy_name=policy_name,
            body=plan.base_body(carrier_body),
            tags={names.T_ROLLBACK_OF: str(carrier.version), names.T_RESTORES: "0", **evidence},
            run_name=f"{policy_name}-rollback-v{carrier.version}-to-default",
            why=why,
        )
        _tag(
            client,
            carrier,
            {
                names.T_REVIEW_STATE: "rolled_back",
                names.T_ROLLED_BACK_BY: plan.ACTOR,
                names.T_ROLLED_BACK_AT: now_iso(),
                names.T_ROLLBACK_REASON: why[: plan.MAX_TAG_CHARS],
                names.T_REPLACED_BY: str(restored.version),
            },
        )
        _audit(audit, "rolled_back", restored, policy_name, why)
    _tag(
        client,
        candidate,
        {
            names.T_REVIEW_STATE: "rolled_back",
            names.T_ROLLED_BACK_BY: plan.ACTOR,
            names.T_ROLLED_BACK_AT: now_iso(),
            names.T_ROLLBACK_REASON: why[: plan.MAX_TAG_CHARS],
            **plan.verdict_tags(verdict, "rolled_back"),
        },
    )
    _tag(client, carrier, evidence)
    if names.CANDIDATE in _aliases_of(client, carrier.model_name, candidate.version):
        client.delete_registered_model_alias(carrier.model_name, names.CANDIDATE)
    return get_version(client, carrier.model_name, restored.version)


def _aliases_of(client: Any, model_name: str, version: int) -> list[str]:
    from pipeline.registry.versions import aliases

    return [alias for alias, v in aliases(client, model_name).items() if v == version]
