"""One optimize cycle: ClickHouse -> optimizer -> MLflow, and where the proposal goes.

Any service being down raises a :class:`~pipeline.errors.PipelineError` with
one line before anything is registered: ``pipeline optimize`` exits non-zero
with it, the controller logs it and retries next period. A body nodes would
refuse (budget above their cap, a bound broken) is never registered.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pipeline.audit import AuditSink
from pipeline.config import Settings
from pipeline.controller import plan
from pipeline.controller.certificates import Saved, book_path, load_book, save_book
from pipeline.controller.config import controller_settings
from pipeline.controller.errors import CycleError
from pipeline.controller.handover import to_registry
from pipeline.controller.reader import read_exploration, read_new_exploration
from pipeline.errors import WarehouseError
from pipeline.node.verify import Limits
from pipeline.optimizer import PolicySpec, optimize
from pipeline.optimizer.certify import advance
from pipeline.registry import names
from pipeline.registry.canary import start_canary
from pipeline.registry.carrier import base_body, running_canary
from pipeline.registry.draft import ReviewDecision
from pipeline.registry.policies import register_proposal
from pipeline.registry.versions import aliases, get_version, load_policy, mlflow_errors
from schemas import PolicyBody

log = logging.getLogger(__name__)

Status = Literal["registered", "unchanged", "canary_running"]


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one cycle did."""

    status: Status
    detail: str
    samples: int = 0
    keys: int = 0
    version: int | None = None
    """The registered proposal, if any."""
    route: plan.Route | None = None
    production: int | None = None
    """The production version after the cycle (a carrier when a canary started)."""


def warehouse_client(settings: Settings) -> Any:
    """A ClickHouse client (raises WarehouseError when it does not answer)."""
    from pipeline.warehouse.client import connect

    return connect(settings)


def mlflow_client(settings: Settings) -> Any:
    """An MLflow client (raises RegistryError when it does not answer)."""
    from pipeline.registry.client import connect

    return connect(settings.mlflow)


def production_body(
    client: Any, model_name: str, default: PolicyBody
) -> tuple[int | None, PolicyBody]:
    """The production version and its policy; ``(None, default)`` when none is set."""
    version = aliases(client, model_name).get(names.PRODUCTION)
    if version is None:
        return None, default
    return version, load_policy(client, get_version(client, model_name, version))


def run_cycle(
    settings: Settings,
    spec: PolicySpec,
    *,
    audit: AuditSink | None = None,
    connect_warehouse: Callable[[Settings], Any] = warehouse_client,
    connect_mlflow: Callable[[Settings], Any] = mlflow_client,
    now: datetime | None = None,
) -> CycleResult:
    """Run one optimize cycle for ``spec``'s policy.

    Raises:
        CycleError: the spec or the proposal would be refused by the nodes.
        WarehouseError: ClickHouse is down or refused the query.
        RegistryError: MLflow is down or refused a step.
    """
    problem = plan.budget_problem(spec, settings.node.max_token_budget)
    if problem:
        raise CycleError(problem)
    config = controller_settings(settings)
    moment = now or datetime.now(UTC)
    since = moment - timedelta(seconds=config.window_s)
    anytime = spec.risk.method == "anytime"
    store = book_path(settings.state_dir, spec.name)
    saved = load_book(store, spec) if anytime else None
    until = moment - timedelta(seconds=config.label_wait_s)
    warehouse = connect_warehouse(settings)
    try:
        if saved is not None:
            after = max(saved.watermark or since, since)
            samples = read_new_exploration(
                warehouse, spec.name, after, until, unlabeled=spec.risk.unlabeled
            )
        else:
            samples = read_exploration(
                warehouse, spec.name, since, unlabeled=spec.risk.unlabeled, until=until
            )
    except WarehouseError:
        raise
    except Exception as exc:  # noqa: BLE001  # clickhouse-connect raises many types
        msg = f"reading exploration outcomes from ClickHouse failed: {type(exc).__name__}: {exc}"
        raise WarehouseError(msg[:500]) from None
    finally:
        warehouse.close()
    n = sum(len(b) for b in samples.values())
    model_name = settings.control.model_name(spec.name)
    with mlflow_errors(f"optimize cycle of {spec.name}"):
        client = connect_mlflow(settings)
        version, current = production_body(client, model_name, spec.default_policy)
        book = None
        events: list[str] = []
        if saved is not None:
            # Fed once, before anything can fail later: the certificates only grow.
            book, events = advance(saved.book, spec, samples, list(current.segments), current)
            save_book(store, Saved(book, max(until, saved.watermark or until)))
            for event in events:
                log.warning("certificates of %s: %s", spec.name, event)
            n = sum(p.curve.n for k, p in book.populations.items() if k.count("/") == 2)
        candidate = running_canary(current)
        if candidate is not None:
            detail = f"canary of v{candidate} is running on v{version}; no new proposal"
            return CycleResult("canary_running", detail, n, len(samples), production=version)
        proposal = optimize(spec, samples, current, book=book)
        problem = plan.body_problem(proposal.body, Limits.from_settings(settings.node))
        if problem:
            msg = f"proposal for {spec.name} not registered: nodes would refuse it: {problem}"
            raise CycleError(msg)
        if proposal.body == base_body(current):
            detail = f"{n} samples in {len(samples)} keys: the policy of v{version or 0} stands"
            return CycleResult("unchanged", detail, n, len(samples), production=version)
        # This cycle's restarts and refusals go on the review page as flags.
        handed = to_registry(proposal, spec, flags=events)
        where = plan.route(
            within_bounds=handed.review.auto_approve,
            auto_approve=settings.control.auto_approve,
            canary_share=spec.canary.share,
        )
        if where == "canary":
            # Registered pending: only the canary's verdict makes its policy production.
            handed = dataclasses.replace(
                handed,
                review=ReviewDecision(
                    auto_approve=False,
                    reason=f"{handed.review.reason}; canary started automatically",
                ),
            )
        registered = register_proposal(
            client,
            handed,
            experiment=settings.mlflow.experiment,
            model_name=model_name,
            allow_auto_approve=settings.control.auto_approve,
            audit=audit,
        )
        production = registered.version.version if registered.promoted else version
        if where == "canary":
            carrier = start_canary(
                client,
                experiment=settings.mlflow.experiment,
                policy_name=spec.name,
                candidate=registered.version,
                candidate_body=proposal.body,
                base_version=version,
                base=base_body(current),
                share=spec.canary.share,
                audit=audit,
            )
            production = carrier.version
    detail = f"{n} samples in {len(samples)} keys: v{registered.version.version} -> {where}"
    log.info("%s", detail)
    return CycleResult(
        "registered", detail, n, len(samples), registered.version.version, where, production
    )
