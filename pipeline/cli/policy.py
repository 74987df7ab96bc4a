"""`pipeline policy list|show|diff|approve|reject|rollback|publish`: review and publishing.

Versions are MLflow model versions of the policy family's registered model;
a VERSION argument is a number or an alias (``production``, ``candidate``).
Every review action is recorded as tags on the version and as an event on
the audit topic; the audit topic is checked before anything changes.

Review actions (approve, reject, rollback) act as an MLflow user: ``--user``
or ``MLFLOW_TRACKING_USERNAME``, with ``MLFLOW_TRACKING_PASSWORD`` or a
prompt for the password. The server says who that login is, and that name is
the one recorded; a user without EDIT or MANAGE on the policy's registered
model is refused before anything changes, and the refusal is audited.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Sequence
from typing import Any

import typer
from rich.table import Table

from pipeline.cli._app import app, console
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.publisher.config import ControlSettings

policy_app = typer.Typer(
    help="Policy versions in the MLflow registry: review, roll back, publish.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

POLICY = typer.Option("default", "--policy", "-p", help="Policy name (the control topic key).")
MODEL = typer.Option(None, "--model", help="Registered model name (default: from settings).")
USER = typer.Option(
    None,
    "--user",
    "-u",
    help=(
        "Your MLflow user (default: MLFLOW_TRACKING_USERNAME); the password comes from "
        "MLFLOW_TRACKING_PASSWORD or a prompt. It is recorded as who acted."
    ),
)
REASON = typer.Option(..., "--reason", help="Why (recorded on the version and the audit topic).")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHOWN_TAGS = ("who", "when", "why", "proposal_reason", "published_at", "rollback_of", "restores")


def _target(policy: str, model: str | None) -> tuple[Settings, ControlSettings, str]:
    settings = load_settings()
    control = settings.control
    name = model or control.model_name(policy)
    if not _MODEL_NAME.match(name):
        msg = f"invalid registered model name {name!r}"
        raise ConfigError(msg)
    return settings, control, name


def _client(settings: Settings) -> Any:
    from pipeline.registry.client import connect

    return connect(settings.mlflow)


def _reviewer(settings: Settings, user: str | None) -> tuple[Settings, str]:
    """``settings`` logged in as the reviewer, and the name MLflow authenticated.

    Raises:
        ConfigError: no user is named, or it is the service account.
        RegistryError: MLflow refused the login or is unreachable.
    """
    from pydantic import SecretStr

    from pipeline.registry import auth

    ml = settings.mlflow
    named = user or os.environ.get("MLFLOW_TRACKING_USERNAME") or None
    if named is None and ml.username != ml.service_username:
        named = ml.username
    if not named:
        msg = (
            "review actions are made as an MLflow user: pass --user NAME or set "
            "MLFLOW_TRACKING_USERNAME (the password: MLFLOW_TRACKING_PASSWORD, or a prompt)"
        )
        raise ConfigError(msg)
    if named == ml.service_username:
        msg = (
            f"{named} is the controller's service account, which makes no review: log in as a "
            "reviewer (--user NAME; an admin adds one with `pipeline reviewers add`)"
        )
        raise ConfigError(msg)
    env_password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if env_password:
        password = SecretStr(env_password)
    elif named == ml.username and ml.password is not None:
        password = ml.password
    else:
        password = SecretStr(typer.prompt(f"MLflow password for {named}", hide_input=True))
    who = auth.current_user(auth.Login(ml.tracking_uri, named, password))
    mlflow = ml.model_copy(update={"username": who, "password": password})
    return settings.model_copy(update={"mlflow": mlflow}), who


def _require_reviewer(
    settings: Settings, who: str, target: tuple[str, str, int], action: str, audit: Any
) -> None:
    """Refuse (and audit) unless ``who`` holds EDIT or MANAGE on ``model``.

    MLflow would refuse the writes too; checking first changes nothing on a
    refusal and names the permission that is missing.
    """
    from pipeline.audit import AuditEvent
    from pipeline.errors import RegistryError
    from pipeline.registry import auth

    policy, model, version = target
    password = settings.mlflow.password
    if password is None:  # _reviewer always sets it
        msg = f"no MLflow password for {who}"
        raise ConfigError(msg)
    login = auth.Login(settings.mlflow.tracking_uri, who, password)
    level = auth.permission(login, who, "registered_model", model)
    if level in auth.REVIEWER_PERMISSIONS:
        return
    reason = (
        f"{who} holds {level or 'no'} permission on {model}, not EDIT or MANAGE: "
        f"{action} refused (an admin grants it with `pipeline reviewers add {who}`)"
    )
    audit(
        AuditEvent.new(
            "review_refused",
            policy_name=policy,
            model_name=model,
            version=version,
            actor=who,
            reason=reason,
            details={"action": action},
        )
    )
    raise RegistryError(reason)


def _audit(settings: Settings, control: ControlSettings) -> Any:
    from pipeline.audit import KafkaAuditLog

    audit = KafkaAuditLog(settings.kafka, control.audit_topic)
    audit.check()
    return audit


@policy_app.command("list")
def list_versions(policy: str = POLICY, model: str | None = MODEL) -> None:
    """List versions, newest first, with review state, aliases and who moved them."""
    from pipeline.registry.versions import list_versions as versions
    from pipeline.registry.versions import mlflow_errors

    settings, _, name = _target(policy, model)
    with mlflow_errors(f"listing {name}"):
        records = versions(_client(settings), name)
    table = Table(title=f"{name} ({len(records)} versions)")
    for col in ("version", "state", "status", "aliases", "created", *_SHOWN_TAGS[:3]):
        table.add_column(col)
    table.add_column("published")
    for r in records:
        created = r.created_at.isoformat(timespec="seconds") if r.created_at else "-"
        who = [r.tags.get(k, "-") for k in _SHOWN_TAGS[:3]]
        table.add_row(
            str(r.version),
            r.review_state or "-",
            r.status,
            ",".join(r.aliases) or "-",
            created,
            *who,
            r.tags.get("published_at", "-"),
        )
    console.print(table)


@policy_app.command("show")
def show(
    version: str = typer.Argument(..., help="Version number or alias."),
    details: bool = typer.Option(
        False, "--details", help="Also the run's params, metrics and per-segment table."
    ),
    policy: str = POLICY,
    model: str | None = MODEL,
) -> None:
    """Show one version: its review page (the run's review/review.md) and review tags.

    A version without a review page (a rollback, a canary carrier) shows its
    params, metrics and per-segment policy instead.
    """
    from pipeline.registry.report import segment_rows, tag_rows, value_rows
    from pipeline.registry.versions import (
        get_version,
        load_policy,
        load_review_page,
        mlflow_errors,
        resolve,
    )

    settings, _, name = _target(policy, model)
    with mlflow_errors(f"reading {name} {version}"):
        client = _client(settings)
        record = get_version(client, name, resolve(client, name, version))
        body = load_policy(client, record)
        data = client.get_run(record.run_id).data if record.run_id else None
        page = load_review_page(client, record)
    console.print(
        f"[bold]{name} v{record.version}[/]: {record.review_state or 'untagged'}, "
        f"{record.status}, aliases {', '.join(record.aliases) or '-'}, run {record.run_id or '-'}"
    )
    if page is not None:
        # Plain Markdown, as logged: what the reviewer saw in MLflow, tables aligned as text.
        console.print(page, markup=False, highlight=False)
    metrics = dict(data.metrics) if data is not None else {}
    console.print(_table("review tags", ["tag", "value"], tag_rows(record.tags)))
    if page is not None and not details:
        return
    if data is not None:
        console.print(_table("params", ["param", "value"], value_rows(dict(data.params))))
        rows = value_rows(metrics, skip_segments=True)
        console.print(_table("metrics", ["metric", "value"], rows))
    columns, segments = segment_rows(body, metrics)
    console.print(_table(f"segments ({len(segments)})", columns, segments))


def _table(title: str, columns: list[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


@policy_app.command("diff")
def diff(
    a: str = typer.Argument(..., help="Earlier version (number or alias)."),
    b: str = typer.Argument(..., help="Later version (number or alias)."),
    everything: bool = typer.Option(False, "--all", help="Also show equal fields."),
    policy: str = POLICY,
    model: str | None = MODEL,
) -> None:
    """Per-segment thresholds and limits that differ between two versions."""
    from pipeline.registry.compare import diff_policies
    from pipeline.registry.versions import get_version, load_policy, mlflow_errors, resolve

    settings, _, name = _target(policy, model)
    with mlflow_errors(f"comparing {name} {a} and {b}"):
        client = _client(settings)
        va, vb = resolve(client, name, a), resolve(client, name, b)
        body_a = load_policy(client, get_version(client, name, va))
        body_b = load_policy(client, get_version(client, name, vb))
    changes = diff_policies(body_a, body_b, everything=everything)
    table = Table(title=f"{name}: v{va} -> v{vb}")
    for col in ("segment", "field", f"v{va}", f"v{vb}", "change"):
        table.add_column(col)
    for c in changes:
        delta = "" if c.delta is None else f"{c.delta:+g}"
        table.add_row(c.segment, c.field, c.before, c.after, delta)
    console.print(table if changes else f"v{va} and v{vb} have the same policy")


@policy_app.command("approve")
def approve(
    version: str = typer.Argument(..., help="Version number or alias (e.g. candidate)."),
    reason: str = REASON,
    user: str | None = USER,
    canary: float | None = typer.Option(
        None,
        "--canary",
        min=0.0,
        max=1.0,
        help=(
            "Serve it first to this share of requests (0-1, exclusive) beside production; "
            "`pipeline controller` promotes or rolls it back on its guardrails."
        ),
    ),
    policy: str = POLICY,
    model: str | None = MODEL,
) -> None:
    """Approve a pending version: `production` moves to it (or to a canary carrying it)."""
    from pipeline.registry.actions import approve as do_approve
    from pipeline.registry.canary import approve_canary
    from pipeline.registry.names import T_CANARY_BASE
    from pipeline.registry.versions import mlflow_errors, resolve

    if canary is not None and not 0 < canary < 1:
        msg = f"--canary must be between 0 and 1 (exclusive), got {canary}"
        raise ConfigError(msg)
    settings, control, name = _target(policy, model)
    audit = _audit(settings, control)
    settings, by = _reviewer(settings, user)
    with mlflow_errors(f"approving {name} {version}"):
        client = _client(settings)
        number = resolve(client, name, version)
        _require_reviewer(settings, by, (policy, name, number), "approve", audit)
        if canary is None:
            do_approve(client, name, number, by=by, reason=reason, audit=audit)
            console.print(f"approved {name} v{number}: production -> v{number}")
            return
        carrier = approve_canary(
            client,
            name,
            number,
            experiment=settings.mlflow.experiment,
            share=canary,
            by=by,
            reason=reason,
            audit=audit,
        )
    console.print(
        f"approved {name} v{number} as a canary on {canary:.0%} of requests: production -> "
        f"v{carrier.version} (v{carrier.tags.get(T_CANARY_BASE, '0')} plus the canary); "
        "`pipeline controller` promotes or rolls it back"
    )


@policy_app.command("reject")
def reject(
    version: str = typer.Argument(..., help="Version number or alias (e.g. candidate)."),
    reason: str = REASON,
    user: str | None = USER,
    policy: str = POLICY,
    model: str | None = MODEL,
) -> None:
    """Reject a version that is not in production; it loses the `candidate` alias."""
    from pipeline.registry.actions import reject as do_reject
    from pipeline.registry.versions import mlflow_errors, resolve

    settings, control, name = _target(policy, model)
    audit = _audit(settings, control)
    settings, by = _reviewer(settings, user)
    with mlflow_errors(f"rejecting {name} {version}"):
        client = _client(settings)
        number = resolve(client, name, version)
        _require_reviewer(settings, by, (policy, name, number), "reject", audit)
        do_reject(client, name, number, by=by, reason=reason, audit=audit)
    console.print(f"rejected {name} v{number}")


@policy_app.command("rollback")
def rollback(
    reason: str = REASON,
    user: str | None = USER,
    to: int | None = typer.Option(None, "--to", help="Version to restore (default: previous)."),
    policy: str = POLICY,
    model: str | None = MODEL,
) -> None:
    """Roll production back: a NEW version restoring an earlier policy becomes production."""
    from pipeline.registry.actions import rollback as do_rollback
    from pipeline.registry.names import PRODUCTION
    from pipeline.registry.versions import aliases, mlflow_errors

    settings, control, name = _target(policy, model)
    audit = _audit(settings, control)
    settings, by = _reviewer(settings, user)
    with mlflow_errors(f"rolling back {name}"):
        client = _client(settings)
        current = aliases(client, name).get(PRODUCTION) or 1
        _require_reviewer(settings, by, (policy, name, current), "rollback", audit)
        done = do_rollback(
            client,
            name,
            experiment=settings.mlflow.experiment,
            by=by,
            reason=reason,
            to=to,
            audit=audit,
        )
    tags = done.version.tags
    console.print(
        f"rolled back {name} v{tags.get('rollback_of')}: new v{done.version.version} restores "
        f"the policy of v{tags.get('restores')} and is production"
    )


@policy_app.command("publish")
def publish(
    once: bool = typer.Option(False, "--once", help="One pass, then exit (1 on error/refusal)."),
) -> None:
    """Publish each move of `production` to the control topic (until SIGTERM, or --once)."""
    from pipeline.audit import KafkaAuditLog
    from pipeline.publisher.service import PassResult, Publisher

    settings = load_settings()
    control = settings.control
    audit = KafkaAuditLog(settings.kafka, control.audit_topic)
    publisher = Publisher(settings.kafka, settings.mlflow, control, audit=audit)

    shown: dict[str, PassResult] = {}

    def report(outcomes: list[PassResult]) -> None:
        for o in outcomes:
            if once or shown.get(o.policy_name) != o:  # a long run prints changes only
                shown[o.policy_name] = o
                version = f" v{o.version}" if o.version is not None else ""
                console.print(f"{o.policy_name}{version}: {o.status}: {o.detail}", highlight=False)

    try:
        if once:
            outcomes = publisher.run_once()
            report(outcomes)
            if any(o.status in {"error", "refused"} for o in outcomes):
                raise typer.Exit(1)
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"publishing {', '.join(control.policy_names())}; SIGTERM stops it")
        publisher.run(stop, report)
    finally:
        publisher.close()
        audit.close()
