"""The control plane in tests: policy bodies, registry proposals, audit events, acks, CLI."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from pipeline.audit import AuditEvent
from pipeline.config import Settings
from pipeline.node.kafka import KafkaSettings
from pipeline.node.testing import read_acks
from pipeline.registry.draft import Frontier, PolicyDraft, ReviewDecision
from pipeline.warehouse import rows
from pipeline.warehouse.client import connect as ch_connect
from schemas import (
    Checkpoint,
    InferenceEvent,
    Outcome,
    PolicyAck,
    PolicyBody,
    Segment,
    SegmentPolicy,
    ThresholdUpdate,
)
from tests.integration.support import read_values, run_cli


def global_policy(threshold: float = 0.8, budget: int = 512) -> PolicyBody:
    """A policy body with one ``global`` segment."""
    policy = SegmentPolicy(thresholds={"normal": threshold}, min_tokens=4, token_budget=budget)
    return PolicyBody(segments={"global": policy}, exploration_share=0.02)


def proposal_body(normal: float = 0.8, qa: float = 0.75) -> PolicyBody:
    """The body the registry tests propose: ``global`` and ``acme/qa/short``."""
    return PolicyBody(
        segments={
            "global": SegmentPolicy(
                thresholds={"normal": normal, "peak": normal - 0.1}, min_tokens=4, token_budget=512
            ),
            "acme/qa/short": SegmentPolicy(
                thresholds={"normal": qa}, min_tokens=2, token_budget=256
            ),
        },
        exploration_share=0.02,
    )


def proposal(normal: float = 0.8, *, auto: bool = False, qa: float = 0.75) -> PolicyDraft:
    """A complete draft of :func:`proposal_body`, as the optimizer would hand it to the registry."""
    curve = [(t / 100, 1 - t / 100, max(0.0, (90 - t) / 1000)) for t in range(50, 100, 5)]
    return PolicyDraft(
        policy_name="default",
        body=proposal_body(normal, qa),
        review=ReviewDecision(
            auto_approve=auto, reason="all segments within bounds" if auto else "step too large"
        ),
        params={"epsilon": 0.05, "delta": 0.1, "window": "24h"},
        metrics={"expected_tokens_saved": 0.31, "n:total": 4200},
        segment_metrics={
            "global": {"tokens_saved": 0.2, "em_drop_bound": 0.03, "n": 3000},
            "acme/qa/short": {"tokens_saved": 0.4, "em_drop_bound": 0.045, "n": 1200},
        },
        pareto={
            "global": Frontier(curve, chosen=normal),
            "acme/qa/short": Frontier(curve, chosen=qa),
        },
        description="integration test proposal",
    )


_PASSWORDS: dict[tuple[str, str], SecretStr] = {}


def mlflow_user(settings: Settings, name: str, *models: str) -> dict[str, str]:
    """The MLflow user ``name`` (created once per server), reviewer of ``models``; its login env.

    The admin of the session stack creates it with a random password and grants
    it what ``pipeline reviewers add`` grants: MANAGE on each registered model
    and EDIT on the experiment. With no ``models`` it only reads, like anyone.
    The returned variables are how a reviewer logs in for the review commands.
    """
    from pipeline.registry import auth
    from pipeline.secret_store import new_password
    from pipeline.stack.mlflow_auth import admin_login

    admin = admin_login(settings)
    key = (settings.mlflow.tracking_uri, name)
    if key not in _PASSWORDS:
        _PASSWORDS[key] = new_password()
        auth.create_user(admin, name, _PASSWORDS[key])
    for model in models:
        auth.grant(admin, name, "registered_model", model, "MANAGE")
    if models:
        found = auth.request(
            admin,
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": settings.mlflow.experiment},
        )
        experiment = str(found["experiment"]["experiment_id"])
        auth.grant(admin, name, "experiment", experiment, "EDIT")
    return {
        "MLFLOW_TRACKING_USERNAME": name,
        "MLFLOW_TRACKING_PASSWORD": _PASSWORDS[key].get_secret_value(),
    }


def audit_events(kafka: KafkaSettings) -> list[AuditEvent]:
    """Every event on ``policy-audit``."""
    return [AuditEvent.from_bytes(raw) for raw in read_values(kafka, "policy-audit")]


def control_updates(kafka: KafkaSettings) -> list[ThresholdUpdate]:
    """Every update on ``policy-control``."""
    return [ThresholdUpdate.from_bytes(raw) for raw in read_values(kafka, "policy-control")]


def trusting(key_id: str, key: str | bytes) -> dict[str, object]:
    """The ``node_config`` (see ``conftest.start_node``) of nodes that trust one HMAC key.

    HMAC is allowed explicitly (nodes accept only Ed25519 by default).
    """
    secret = key.decode() if isinstance(key, bytes) else key
    return {"signing_keys": {key_id: SecretStr(secret)}, "allowed_algorithms": ["hmac-sha256"]}


def acks_matching(
    kafka: KafkaSettings, want: Callable[[PolicyAck], bool], count: int
) -> list[PolicyAck]:
    """The acks on ``policy-acks`` that ``want`` accepts, once there are ``count`` of them."""
    acks = read_acks(kafka, lambda got: sum(map(want, got)) >= count, timeout=30)
    return [a for a in acks if want(a)]


def policy_cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``pipeline policy ARGS`` (the review commands and ``publish``) to the end."""
    return run_cli(settings, "policy", *args, env=env)


SEGMENT = Segment(tenant="acme", task="qa", length_bucket="short")


def outcome(
    policy: str,
    i: int,
    *,
    ts: datetime,
    exploration: bool,
    arm: str = "production",
    version: int = 0,
    em: bool = True,
) -> Outcome:
    rid = f"{policy}-{arm}-{exploration}-{i}-{uuid.uuid4().hex[:6]}"
    trajectory = tuple(
        Checkpoint(tokens=40 * (j + 1), confidence=0.97, answer="x") for j in range(4)
    )
    event = InferenceEvent(
        event_id=f"e-{rid}",
        request_id=rid,
        node_id="node-sim",
        ts=ts,
        model="m",
        segment=SEGMENT,
        policy_name=policy,
        policy_version=version,
        threshold=None if exploration else 0.95,
        arm=arm,  # type: ignore[arg-type]
        exploration=exploration,
        tokens_prompt=10,
        tokens_generated=160 if exploration else 40,
        tokens_budget=4096,
        stop_reason="natural_end" if exploration else "confident",
        confidence=0.97,
        answer="x",
        latency_ms=1.0,
        node_load=0.5,
        trajectory=trajectory if exploration else None,
    )
    return Outcome(
        request_id=rid,
        event=event,
        labeled=True,
        em=em,
        em_full=em if exploration else None,
        checkpoint_em=(em,) * 4 if exploration else None,
        version=1,
        joined_at=ts,
    )


def insert(settings: Settings, outcomes: list[Outcome]) -> None:
    client = ch_connect(settings)
    try:
        client.insert(
            "outcomes",
            [rows.outcome_row(o, "test", 0, i) for i, o in enumerate(outcomes)],
            column_names=rows.OUTCOME_COLUMNS,
        )
        points = [r for o in outcomes for r in rows.trajectory_rows(o)]
        if points:
            client.insert("trajectory_points", points, column_names=rows.TRAJECTORY_COLUMNS)
    finally:
        client.close()


def exploration(
    policy: str, n: int, *, age: timedelta = timedelta(minutes=5), em: bool = True
) -> list[Outcome]:
    """``n`` labeled exploration outcomes of requests made ``age`` ago."""
    now = datetime.now(UTC)
    return [outcome(policy, i, ts=now - age, exploration=True, em=em) for i in range(n)]
