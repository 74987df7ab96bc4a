"""The guardrail monitor: judge a running canary from ClickHouse and act on the verdict.

While production is a carrier (its body has ``candidate_version``), each
check pairs the canary's and production's requests of the interval that
closed since the last check (request time up to ``label_wait_s`` ago;
:func:`~pipeline.controller.reader.read_canary`), appends the pairs to the
canary's ledger (:mod:`pipeline.controller.canary_ledger`: pairs are formed
once and never re-drawn, so the always-valid tests stay valid), feeds the
whole ledger to :func:`~pipeline.optimizer.guardrail_verdict`, and on
``rollback`` or ``promote`` registers the version that ends the canary. A
candidate that a reviewer rejected while it ran is rolled back too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pipeline.audit import AuditSink
from pipeline.config import Settings
from pipeline.controller.canary_ledger import (
    CanaryLedger,
    ledger_path,
    load_ledger,
    save_ledger,
)
from pipeline.controller.config import controller_settings
from pipeline.controller.cycle import mlflow_client, production_body, warehouse_client
from pipeline.controller.reader import Paired, read_canary
from pipeline.errors import WarehouseError
from pipeline.optimizer import CanaryVerdict, PolicySpec, guardrail_verdict
from pipeline.registry.canary import promote_canary, rollback_canary
from pipeline.registry.carrier import running_canary
from pipeline.registry.versions import get_version, mlflow_errors

Action = Literal["idle", "continue", "promoted", "rolled_back"]
_SLACK = timedelta(minutes=1)
"""Read from a minute before the carrier's creation: nodes' clocks and event ts differ."""


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """What one check did."""

    action: Action
    detail: str
    version: int | None = None
    """The new production version after a promotion or rollback."""
    verdict: CanaryVerdict | None = None


def check_canary(
    settings: Settings,
    spec: PolicySpec,
    *,
    audit: AuditSink | None = None,
    connect_warehouse: Callable[[Settings], Any] = warehouse_client,
    connect_mlflow: Callable[[Settings], Any] = mlflow_client,
) -> MonitorResult:
    """One guardrail check of ``spec``'s policy.

    Raises:
        WarehouseError: ClickHouse is down or refused the query.
        RegistryError: MLflow is down or refused a step.
    """
    model_name = settings.control.model_name(spec.name)
    with mlflow_errors(f"canary check of {spec.name}"):
        client = connect_mlflow(settings)
        version, body = production_body(client, model_name, spec.default_policy)
        candidate = running_canary(body)
        if version is None or candidate is None:
            return MonitorResult("idle", "no canary running")
        carrier = get_version(client, model_name, version)
        since = (carrier.created_at or datetime.now(UTC)) - _SLACK
        rejected = get_version(client, model_name, candidate).review_state == "rejected"
    if rejected:
        verdict = CanaryVerdict("rollback", f"v{candidate} was rejected by a reviewer", ())
    else:
        paired = _pairs(settings, spec.name, version, candidate, since, connect_warehouse)
        verdict = guardrail_verdict(
            spec, em=paired.em, tokens=paired.tokens, negative_feedback=paired.negative_feedback
        )
    if verdict.action == "continue":
        return MonitorResult("continue", f"canary v{candidate}: {verdict.reason}", None, verdict)
    end = rollback_canary if verdict.action == "rollback" else promote_canary
    with mlflow_errors(f"ending the canary of {spec.name} v{candidate}"):
        done = end(
            client,
            experiment=settings.mlflow.experiment,
            policy_name=spec.name,
            carrier=carrier,
            carrier_body=body,
            verdict=verdict,
            audit=audit,
        )
    action: Action = "rolled_back" if verdict.action == "rollback" else "promoted"
    detail = f"canary v{candidate} {action.replace('_', ' ')}: {verdict.reason}; v{done.version}"
    return MonitorResult(action, detail, done.version, verdict)


def _pairs(
    settings: Settings,
    policy: str,
    production: int,
    candidate: int,
    since: datetime,
    connect: Callable[[Settings], Any],
) -> Paired:
    """The ledger's pairs, with the interval that closed since the last check appended."""
    path = ledger_path(settings.state_dir, policy)
    ledger = load_ledger(path, production, candidate, since)
    until = datetime.now(UTC) - timedelta(seconds=controller_settings(settings).label_wait_s)
    if until > ledger.watermark:
        fresh = _read(settings, policy, production, candidate, ledger, until, connect)
        ledger = ledger.extend(fresh, until)
        save_ledger(path, ledger)
    return ledger.pairs


def _read(
    settings: Settings,
    policy: str,
    production: int,
    candidate: int,
    ledger: CanaryLedger,
    until: datetime,
    connect: Callable[[Settings], Any],
) -> Paired:
    warehouse = connect(settings)
    try:
        return read_canary(
            warehouse,
            policy,
            production=production,
            candidate=candidate,
            after=ledger.watermark,
            until=until,
        )
    except WarehouseError:
        raise
    except Exception as exc:  # noqa: BLE001  # clickhouse-connect raises many types
        msg = f"reading canary outcomes from ClickHouse failed: {type(exc).__name__}: {exc}"
        raise WarehouseError(msg[:500]) from None
    finally:
        warehouse.close()
