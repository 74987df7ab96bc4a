"""The controller on the real stack: ClickHouse outcomes -> optimize -> MLflow -> publish -> node.

Outcomes are written straight into ClickHouse with the warehouse's own row
mappings (what the stream sink writes), under a uuid policy name so tests
share the session database without seeing each other's rows.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.controller.config import ControllerSettings
from pipeline.controller.cycle import run_cycle
from pipeline.controller.monitor import check_canary
from pipeline.node import Node, NodeSettings
from pipeline.node.testing import read_acks
from pipeline.optimizer import PolicySpec
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.service import Publisher
from pipeline.registry.client import connect as mlflow_connect
from pipeline.registry.versions import get_version, load_policy
from tests.integration._control import exploration, insert, mlflow_user, outcome, policy_cli
from tests.integration.support import free_port, run_cli, write_policy_spec
from tests.unit._optimizer_data import spec_with

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "integration-controller-key"


def make_spec(name: str, canary_share: float) -> PolicySpec:
    return spec_with(
        name=name,
        auto_approve={"max_step": 0.05, "max_em_drop_bound": 0.05, "min_samples": 500},
        canary={"share": canary_share, "min_samples": 100, "max_samples": 5000, "alpha": 0.05},
    )


@pytest.fixture
def policy() -> str:
    return f"es{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(isolated: Settings, policy: str) -> Settings:
    control = ControlSettings.model_validate(
        {
            "policies": policy,
            "models": {policy: f"test-controller-{policy}"},
            "algorithm": "hmac-sha256",
            "signing_key_id": "control-it",
            "signing_key": KEY,
            "poll_interval_s": 0.2,
            "bootstrap_timeout_s": 20,
        }
    )
    # Outcomes are inserted just before each check: the canary's interval closes at once.
    controller = ControllerSettings(label_wait_s=0)
    return isolated.model_copy(update={"control": control, "controller": controller})


@pytest.fixture
def node(settings: Settings, policy: str, tmp_path: Path) -> Iterator[Node]:
    node_settings = NodeSettings.model_validate(
        {
            "node_id": "node-c",
            "policy_name": policy,
            "signing_keys": {"control-it": SecretStr(KEY)},
            "allowed_algorithms": ["hmac-sha256"],
            "state_dir": tmp_path / "node",
            "bootstrap_timeout_s": 30.0,
            "retry_interval_s": 0.5,
        }
    )
    started = Node(settings.kafka, node_settings, emit=False)
    started.start()
    yield started
    started.close(timeout=5)


def publish(settings: Settings) -> list[tuple[str, int | None]]:
    publisher = Publisher(settings.kafka, settings.mlflow, settings.control)
    try:
        return [(o.status, o.version) for o in publisher.run_once()]
    finally:
        publisher.close()


def acked(settings: Settings, version: int) -> bool:
    def want(got: list[Any]) -> bool:
        return any(a.version == version and a.status == "applied" for a in got)

    return want(read_acks(settings.kafka, want, timeout=30))


def test_one_cycle_registers_publishes_and_a_node_applies_it(
    settings: Settings, policy: str, node: Node
) -> None:
    insert(settings, exploration(policy, 1200))
    result = run_cycle(settings, make_spec(policy, canary_share=0.0))
    assert (result.status, result.route, result.version) == ("registered", "production", 1)
    assert result.samples == 1200

    ml = mlflow_connect(settings.mlflow)
    model = settings.control.model_name(policy)
    record = get_version(ml, model, 1)
    assert record.review_state == "auto_approved"
    assert record.run_id and ml.get_run(record.run_id).data.metrics
    body = load_policy(ml, record)
    assert body.segments["acme/qa/short"].thresholds["normal"] == pytest.approx(0.95)

    assert publish(settings) == [("published", 1)]
    assert node.subscriber.wait_for_version(1, timeout=30)
    assert node.controller.snapshot.version == 1
    assert acked(settings, 1)
    assert node.controller.should_stop("acme/qa/short", 40, 0.96).reason == "confident"

    again = run_cycle(settings, make_spec(policy, canary_share=0.0))
    assert again.status == "registered" and again.version == 2  # the next step: 0.90


def test_a_canary_that_hurts_em_is_rolled_back_automatically(
    settings: Settings, policy: str, node: Node
) -> None:
    insert(settings, exploration(policy, 1200))
    assert run_cycle(settings, make_spec(policy, canary_share=0.0)).version == 1
    assert publish(settings) == [("published", 1)]

    spec = make_spec(policy, canary_share=0.5)
    started = run_cycle(settings, spec)
    assert (started.status, started.route, started.version, started.production) == (
        "registered",
        "canary",
        2,
        3,
    )
    assert run_cycle(settings, spec).status == "canary_running"
    assert publish(settings) == [("published", 3)]
    assert node.subscriber.wait_for_version(3, timeout=30)
    assert node.controller.snapshot.candidate_version == 2
    assert check_canary(settings, spec).action == "continue"  # no data yet

    rng = random.Random(7)  # noqa: S311  # simulated EM, not a secret
    now = datetime.now(UTC)
    served = [
        outcome(policy, i, ts=now, exploration=False, arm=arm, version=v, em=rng.random() < p)
        for i in range(400)
        for arm, v, p in (("candidate", 2, 0.5), ("production", 3, 0.95))
    ]
    insert(settings, served)
    checked = check_canary(settings, spec)
    assert checked.action == "rolled_back", checked.detail
    assert checked.version == 4

    ml = mlflow_connect(settings.mlflow)
    model = settings.control.model_name(policy)
    candidate, carrier, restored = (get_version(ml, model, v) for v in (2, 3, 4))
    assert candidate.review_state == "rolled_back"
    assert candidate.tags["canary_state"] == "rolled_back"
    assert "em:" in candidate.tags["canary_evidence"]
    assert "guardrail breached" in candidate.tags["rollback_reason"]
    assert carrier.review_state == "rolled_back"
    assert (restored.tags["rollback_of"], restored.tags["restores"]) == ("3", "1")
    assert load_policy(ml, restored) == load_policy(ml, get_version(ml, model, 1))

    assert publish(settings) == [("published", 4)]
    assert node.subscriber.wait_for_version(4, timeout=30)
    assert node.controller.snapshot.candidate_version is None
    assert acked(settings, 4)
    assert check_canary(settings, spec).action == "idle"


def test_optimize_exits_non_zero_with_one_line_when_clickhouse_is_down(
    settings: Settings, policy: str, tmp_path: Path
) -> None:
    spec_file = write_policy_spec(tmp_path, policy)
    away = {"PIPELINE_CLICKHOUSE__URL": f"http://127.0.0.1:{free_port()}"}
    done = run_cli(settings, "optimize", "--spec", str(spec_file), env=away, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ClickHouse" in done.stderr and "not reachable" in done.stderr
    assert "Traceback" not in done.stderr
    ml = mlflow_connect(settings.mlflow)
    assert ml.search_model_versions(f"name = '{settings.control.model_name(policy)}'") == []


def test_a_harmless_canary_is_promoted_and_the_node_serves_it_to_everyone(
    settings: Settings, policy: str, node: Node
) -> None:
    insert(settings, exploration(policy, 1200))
    assert run_cycle(settings, make_spec(policy, canary_share=0.0)).version == 1
    assert publish(settings) == [("published", 1)]

    spec = make_spec(policy, canary_share=0.5)
    started = run_cycle(settings, spec)
    assert (started.route, started.version, started.production) == ("canary", 2, 3)
    assert publish(settings) == [("published", 3)]
    assert node.subscriber.wait_for_version(3, timeout=30)
    assert node.controller.snapshot.candidate_version == 2

    # Both arms equally good: every guardrail's safety test crosses (the
    # negative-feedback margin of 0.01 needs several hundred pairs).
    now = datetime.now(UTC)
    served = [
        outcome(policy, i, ts=now, exploration=False, arm=arm, version=v, em=True)
        for i in range(800)
        for arm, v in (("candidate", 2), ("production", 3))
    ]
    insert(settings, served)
    checked = check_canary(settings, spec)
    assert checked.action == "promoted", checked.detail
    assert checked.version == 4

    ml = mlflow_connect(settings.mlflow)
    model = settings.control.model_name(policy)
    candidate, carrier, promoted = (get_version(ml, model, v) for v in (2, 3, 4))
    assert candidate.review_state == "approved"
    assert candidate.tags["canary_state"] == "promoted"
    assert candidate.tags["replaced_by"] == "4"
    assert promoted.tags["promotes"] == "2"
    assert "em:" in promoted.tags["canary_evidence"]
    assert load_policy(ml, promoted).segments == load_policy(ml, candidate).segments
    assert load_policy(ml, promoted) != load_policy(ml, get_version(ml, model, 1))
    assert carrier.review_state != "rolled_back"

    assert publish(settings) == [("published", 4)]
    assert node.subscriber.wait_for_version(4, timeout=30)
    assert node.controller.snapshot.candidate_version is None
    assert acked(settings, 4)
    assert check_canary(settings, spec).action == "idle"


def test_a_reviewer_approves_a_pending_version_as_a_canary_and_rejecting_it_rolls_back(
    settings: Settings, policy: str, node: Node
) -> None:
    insert(settings, exploration(policy, 1200))
    assert run_cycle(settings, make_spec(policy, canary_share=0.0)).version == 1
    assert publish(settings) == [("published", 1)]
    manual = settings.model_copy(
        update={"control": settings.control.model_copy(update={"auto_approve": False})}
    )
    spec = make_spec(policy, canary_share=0.5)
    pending = run_cycle(manual, spec)
    assert (pending.status, pending.route, pending.version) == ("registered", "pending", 2)

    model = settings.control.model_name(policy)
    who = ("--reason", "looks safe", "--model", model)
    ann = mlflow_user(settings, "ann", model)
    bad_share = policy_cli(settings, "approve", "2", "--canary", "1", *who, env=ann)
    assert bad_share.returncode != 0 and "--canary" in bad_share.stderr
    assert "Traceback" not in bad_share.stderr
    done = policy_cli(settings, "approve", "candidate", "--canary", "0.25", *who, env=ann)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "canary on 25% of requests: production -> v3" in " ".join(done.stdout.split())

    ml = mlflow_connect(settings.mlflow)
    candidate, carrier = get_version(ml, model, 2), get_version(ml, model, 3)
    assert candidate.review_state == "pending"  # only the canary's end decides
    assert (candidate.tags["canary_state"], candidate.tags["who"]) == ("running", "ann")
    assert (carrier.review_state, carrier.tags["approved_by"]) == ("approved", "ann")
    assert carrier.tags["why"].startswith("looks safe; canary of v2 on 25% of requests")
    carried = load_policy(ml, carrier)
    assert (carried.candidate_version, carried.canary_share) == (2, 0.25)
    assert carried.segments == load_policy(ml, get_version(ml, model, 1)).segments
    assert carried.candidate_segments == load_policy(ml, candidate).segments

    assert publish(settings) == [("published", 3)]
    assert node.subscriber.wait_for_version(3, timeout=30)
    assert node.controller.snapshot.candidate_version == 2

    # The carrier is production now, so v2 is older than it: not approvable again.
    again = policy_cli(settings, "approve", "2", "--canary", "0.25", *who, env=ann)
    assert again.returncode == 1 and "older than production" in again.stderr

    bob = mlflow_user(settings, "bob", model)
    rejected = policy_cli(settings, "reject", "2", "--reason", "no", "--model", model, env=bob)
    assert rejected.returncode == 0, rejected.stderr
    checked = check_canary(settings, spec)
    assert checked.action == "rolled_back" and "rejected by a reviewer" in checked.detail
    restored = get_version(ml, model, 4)
    assert (restored.tags["rollback_of"], restored.tags["restores"]) == ("3", "1")
    assert publish(settings) == [("published", 4)]
    assert node.subscriber.wait_for_version(4, timeout=30)
    assert node.controller.snapshot.candidate_version is None
