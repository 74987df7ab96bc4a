"""The control plane in tests: policy bodies, registry proposals, audit events, acks, CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from pydantic import SecretStr

from pipeline.audit import AuditEvent
from pipeline.config import Settings
from pipeline.node.kafka import KafkaSettings
from pipeline.node.testing import read_acks
from pipeline.registry.draft import Frontier, PolicyDraft, ReviewDecision
from schemas import PolicyAck, PolicyBody, SegmentPolicy, ThresholdUpdate
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


def audit_events(kafka: KafkaSettings) -> list[AuditEvent]:
    """Every event on ``policy-audit``."""
    return [AuditEvent.from_bytes(raw) for raw in read_values(kafka, "policy-audit")]


def control_updates(kafka: KafkaSettings) -> list[ThresholdUpdate]:
    """Every update on ``policy-control``."""
    return [ThresholdUpdate.from_bytes(raw) for raw in read_values(kafka, "policy-control")]


def trusting(key_id: str, key: str | bytes) -> dict[str, object]:
    """The ``node_config`` (see ``conftest.start_node``) of nodes that trust one signing key."""
    secret = key.decode() if isinstance(key, bytes) else key
    return {"signing_keys": {key_id: SecretStr(secret)}}


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
