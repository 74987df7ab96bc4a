"""Review actions on policy versions: approve, reject, roll back.

Each action checks the review rules (:mod:`pipeline.registry.transitions`),
records who, when and why as model version tags, moves the aliases, and then
records an :class:`~pipeline.audit.AuditEvent`. A rollback never moves
``production`` back to an old number: it registers a new version that copies
the good version's policy (ADR 002), so versions on the control topic only grow.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from pipeline.audit import AuditSink
from pipeline.registry import names
from pipeline.registry.errors import ReviewError
from pipeline.registry.policies import Registered, log_policy_version
from pipeline.registry.tags import (
    now_iso,
    promotion_tags,
    record_audit,
    rolled_back_tags,
    set_tags,
)
from pipeline.registry.transitions import check_approve, check_reject, rollback_target
from pipeline.registry.versions import (
    VersionRecord,
    aliases,
    get_version,
    is_missing,
    list_versions,
    load_policy,
)

log = logging.getLogger(__name__)


def policy_name_of(record: VersionRecord) -> str:
    """The policy (control topic key) a registered version is for."""
    name = record.tags.get(names.T_POLICY_NAME)
    if not name:
        msg = (
            f"{record.model_name} v{record.version} has no {names.T_POLICY_NAME} tag: "
            "it was not registered as a policy"
        )
        raise ReviewError(msg)
    return name


def approve(
    client: Any, model_name: str, version: int, *, by: str, reason: str, audit: AuditSink | None
) -> VersionRecord:
    """Approve a pending version and make it ``production``.

    The policy artifact is validated first: a version whose policy cannot be
    published is never approved.

    Raises:
        ReviewError: if the rules forbid it.
        PolicyArtifactError: if its policy is missing or invalid.
    """
    record = get_version(client, model_name, version)
    current = aliases(client, model_name).get(names.PRODUCTION)
    check_approve(record.view(), current)
    policy_name = policy_name_of(record)
    load_policy(client, record)
    set_tags(client, record, promotion_tags(by, reason, "approved", now_iso()))
    client.set_registered_model_alias(model_name, names.PRODUCTION, str(version))
    record_audit(
        audit,
        "approved",
        record,
        policy_name=policy_name,
        actor=by,
        why=reason,
        details={"previous_production": current or "none"},
    )
    return get_version(client, model_name, version)


def reject(
    client: Any, model_name: str, version: int, *, by: str, reason: str, audit: AuditSink | None
) -> VersionRecord:
    """Reject a version that is not in production; it loses the ``candidate`` alias.

    Raises:
        ReviewError: if the rules forbid it.
    """
    record = get_version(client, model_name, version)
    found = aliases(client, model_name)
    check_reject(record.view(), found.get(names.PRODUCTION))
    policy_name = policy_name_of(record)
    set_tags(
        client,
        record,
        {
            names.T_REVIEW_STATE: "rejected",
            names.T_REJECTED_BY: by,
            names.T_REJECTED_AT: now_iso(),
            names.T_REJECT_REASON: reason,
        },
    )
    if found.get(names.CANDIDATE) == version:
        client.delete_registered_model_alias(model_name, names.CANDIDATE)
    record_audit(
        audit,
        "rejected",
        record,
        policy_name=policy_name,
        actor=by,
        why=reason,
    )
    return get_version(client, model_name, version)


def _good_run_extras(
    client: Any, run_id: str | None, tmp: Path
) -> tuple[dict[str, float], Path | None]:
    # The restored policy's metrics and plot, so the new version reads like the old one.
    import mlflow.artifacts

    if not run_id:
        return {}, None
    metrics = {str(k): float(v) for k, v in client.get_run(run_id).data.metrics.items()}
    try:
        plot = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=f"{names.PLOT_DIR}/{names.PLOT_FILE}",
            dst_path=str(tmp),
            tracking_uri=client.tracking_uri,
        )
    except Exception as exc:
        if not (is_missing(exc) or isinstance(exc, OSError)):
            raise
        log.info("run %s has no plot to copy: %s", run_id, exc)
        return metrics, None
    return metrics, Path(plot)


def rollback(
    client: Any,
    model_name: str,
    *,
    experiment: str,
    by: str,
    reason: str,
    to: int | None = None,
    audit: AuditSink | None,
) -> Registered:
    """Replace the production version by a new version that restores a good policy.

    Args:
        client: An ``MlflowClient``.
        model_name: Registered model of the policy family.
        experiment: MLflow experiment for the rollback's run.
        by: Who rolls back.
        reason: Why.
        to: The version to restore; by default the newest earlier served version.
        audit: Where to record the ``rolled_back`` event.

    Returns:
        The new version (``production`` now points at it).

    Raises:
        ReviewError: if nothing is in production or nothing can be restored.
        PolicyArtifactError: if the good version's policy is missing or invalid.
    """
    records = list_versions(client, model_name)
    current = aliases(client, model_name)
    bad_view, good_view = rollback_target(
        [r.view() for r in records], current.get(names.PRODUCTION), to
    )
    by_version = {r.version: r for r in records}
    bad, good = by_version[bad_view.version], by_version[good_view.version]
    policy_name = policy_name_of(good)
    body = load_policy(client, good)
    at = now_iso()
    tags = {
        **promotion_tags(by, reason, "approved", at),
        names.T_PROPOSED_AT: at,
        names.T_PROPOSAL_REASON: f"rollback of v{bad.version} to the policy of v{good.version}",
        names.T_ROLLBACK_OF: str(bad.version),
        names.T_RESTORES: str(good.version),
    }
    params = {
        names.T_ROLLBACK_OF: str(bad.version),
        names.T_RESTORES: str(good.version),
        "rolled_back_by": by,
        "reason": reason[:6000],
    }
    with tempfile.TemporaryDirectory(prefix="rollback-") as tmp:
        metrics, plot = _good_run_extras(client, good.run_id, Path(tmp))
        run_id, new = log_policy_version(
            client,
            experiment=experiment,
            model_name=model_name,
            policy_name=policy_name,
            body=body,
            params=params,
            metrics=metrics,
            tags=tags,
            run_name=f"{policy_name}-rollback-v{bad.version}-to-v{good.version}",
            plot=plot,
            description=(
                f"Rollback of v{bad.version}: restores the policy of v{good.version}. {reason}"
            ),
        )
    set_tags(client, bad, rolled_back_tags(by, at, reason, new.version))
    client.set_registered_model_alias(model_name, names.PRODUCTION, str(new.version))
    if current.get(names.CANDIDATE) == bad.version:
        client.delete_registered_model_alias(model_name, names.CANDIDATE)
    record_audit(
        audit,
        "rolled_back",
        new,
        policy_name=policy_name,
        actor=by,
        why=reason,
        details={names.T_ROLLBACK_OF: bad.version, names.T_RESTORES: good.version},
    )
    return Registered(run_id, get_version(client, model_name, new.version), promoted=True)
