"""Model version tags and audit records: the one place review moves write them.

Every review move (an approval, a rejection, a rollback, a canary's start or
end) records its state in model version tags and then one
:class:`~pipeline.audit.AuditEvent`; these helpers are the only writers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.audit import AuditAction, AuditEvent, AuditSink
from pipeline.optimizer.sequential import CanaryVerdict
from pipeline.registry import names
from pipeline.registry.versions import VersionRecord


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string, the format of every time tag."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def set_tags(client: Any, record: VersionRecord, tags: dict[str, str]) -> None:
    """Set ``tags`` on the model version of ``record``."""
    for key, value in tags.items():
        client.set_model_version_tag(record.model_name, str(record.version), key, value)


def promotion_tags(actor: str, reason: str, state: names.ReviewState, at: str) -> dict[str, str]:
    """Tags of a version put into production by ``actor``."""
    return {
        names.T_REVIEW_STATE: state,
        names.T_APPROVED_BY: actor,
        names.T_APPROVED_AT: at,
        names.T_APPROVE_REASON: reason,
        names.T_WHO: actor,
        names.T_WHEN: at,
        names.T_WHY: reason,
        names.T_PROMOTED_AT: at,
    }


def rolled_back_tags(actor: str, at: str, reason: str, replaced_by: int | None) -> dict[str, str]:
    """Tags of a version taken out of production (or out of its canary) by ``actor``."""
    tags = {
        names.T_REVIEW_STATE: "rolled_back",
        names.T_ROLLED_BACK_BY: actor,
        names.T_ROLLED_BACK_AT: at,
        names.T_ROLLBACK_REASON: reason,
    }
    if replaced_by is not None:
        tags[names.T_REPLACED_BY] = str(replaced_by)
    return tags


def record_audit(
    sink: AuditSink | None,
    action: AuditAction,
    record: VersionRecord,
    *,
    policy_name: str,
    actor: str,
    why: str,
    details: Mapping[str, object] | None = None,
) -> None:
    """Send one audit event about ``record`` to ``sink`` (nothing when there is no sink)."""
    if sink is not None:
        sink(
            AuditEvent.new(
                action,
                policy_name=policy_name,
                model_name=record.model_name,
                version=record.version,
                actor=actor,
                reason=why,
                details=details,
            )
        )


def evidence_summary(verdict: CanaryVerdict) -> str:
    """One line per metric: pairs, mean difference (positive: canary worse), e-values."""
    parts = [
        f"{e.metric}: {e.pairs} pairs, diff {e.mean_difference:+.4f} (margin {e.margin}), "
        f"harm e={e.harm_e:.3g}, safe e={e.safe_e:.3g}"
        for e in verdict.evidence
    ]
    return "; ".join(parts)[: names.MAX_TAG_CHARS]


def verdict_tags(verdict: CanaryVerdict, state: str) -> dict[str, str]:
    """Tags recording a canary's end on its candidate version."""
    return {
        names.T_CANARY_STATE: state,
        names.T_CANARY_VERDICT: f"{verdict.action}: {verdict.reason}"[: names.MAX_TAG_CHARS],
        names.T_CANARY_EVIDENCE: evidence_summary(verdict),
    }
