"""The publisher's loop against fakes of MLflow and the control topic (no services).

The integration tests run the same paths on the real stack; these pin down
the failure handling that is hard to provoke there: a send whose fate is
unknown, MLflow or Kafka away for a pass, a restart.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

import pipeline.publisher.service as pub
from pipeline.audit import AuditEvent
from pipeline.config import MlflowSettings
from pipeline.errors import ConfigError, RegistryError
from pipeline.node.kafka import KafkaSettings
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.errors import PublishError
from schemas import PolicyBody, SegmentPolicy, ThresholdUpdate, hmac_verify

KEY = "unit-key"
MODEL = "earlystop-policy-default"
BODY = PolicyBody(
    segments={"global": SegmentPolicy(thresholds={"normal": 0.8}, min_tokens=4, token_budget=256)},
    exploration_share=0.02,
)


class Missing(Exception):
    error_code = "RESOURCE_DOES_NOT_EXIST"


def reviewers(model: str, user: str) -> str | None:
    """ann reviews the default policy; nobody else exists."""
    return "EDIT" if (model, user) == ("earlystop-policy-default", "ann") else None


class FakeRegistry:
    tracking_uri = "http://fake"

    def __init__(self) -> None:
        self.versions: dict[int, dict[str, Any]] = {}
        self.alias: dict[str, int] = {}

    def add(self, version: int, state: str = "approved", status: str = "READY") -> None:
        tags = {"review_state": state, "policy_name": "default", "approved_by": "ann"}
        self.versions[version] = {"status": status, "tags": tags}

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(aliases={k: str(v) for k, v in self.alias.items()})

    def get_model_version(self, name: str, version: str) -> Any:
        if int(version) not in self.versions:
            raise Missing
        v = self.versions[int(version)]
        return SimpleNamespace(
            name=name,
            version=version,
            status=v["status"],
            tags=dict(v["tags"]),
            aliases=[],
            run_id="run",
            source="models:/m",
            creation_timestamp=0,
            description="",
        )

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.versions[int(version)]["tags"][key] = value


class FakeTopic:
    def __init__(self) -> None:
        self.updates: list[ThresholdUpdate] = []
        self.down = False
        self.fail_next_send: str | None = None  # "lost" or "written"
        self.reads = 0

    def read(self, kafka: KafkaSettings, topic: str, timeout_s: float) -> dict[str, int]:
        self.reads += 1
        if self.down:
            msg = "control topic could not be read: unreachable"
            raise PublishError(msg)
        newest: dict[str, int] = {}
        for u in self.updates:
            newest[u.policy_name] = max(newest.get(u.policy_name, 0), u.version)
        return newest

    def producer(self, kafka: KafkaSettings, topic: str, timeout_s: float) -> Any:
        def send(update: ThresholdUpdate) -> int:
            failure, self.fail_next_send = self.fail_next_send, None
            if failure == "written":
                self.updates.append(update)
            if failure is not None or self.down:
                msg = "not confirmed: timed out"
                raise PublishError(msg)
            self.updates.append(update)
            return len(self.updates) - 1

        return SimpleNamespace(send=send, close=lambda: None)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeRegistry, FakeTopic]:
    registry, topic = FakeRegistry(), FakeTopic()
    monkeypatch.setattr(pub, "published_versions", topic.read)
    monkeypatch.setattr(pub, "ControlProducer", topic.producer)
    monkeypatch.setattr(pub, "load_policy", lambda client, record: BODY)
    return registry, topic


def publisher(registry: FakeRegistry, audit: list[AuditEvent] | None = None) -> pub.Publisher:
    control = ControlSettings.model_validate(
        {"algorithm": "hmac-sha256", "signing_key": KEY, "poll_interval_s": 0.01}
    )
    sink = audit.append if audit is not None else None
    return pub.Publisher(
        KafkaSettings(),
        MlflowSettings(),
        control,
        audit=sink,
        connect=lambda _: registry,
        permission_of=reviewers,
    )


def statuses(outcomes: list[pub.Outcome]) -> list[tuple[str, int | None]]:
    return [(o.status, o.version) for o in outcomes]


def test_publishes_the_approved_production_version_once_signed(
    world: tuple[FakeRegistry, FakeTopic],
) -> None:
    registry, topic = world
    registry.add(1)
    registry.alias["production"] = 1
    audit: list[AuditEvent] = []
    p = publisher(registry, audit)

    assert statuses(p.run_once()) == [("published", 1)]
    assert statuses(p.run_once()) == [("up_to_date", 1)]
    (update,) = topic.updates
    assert (update.policy_name, update.version, update.signing_key_id) == (
        "default",
        1,
        "control-1",
    )
    assert hmac_verify(KEY.encode(), update.signed_payload(), update.signature)
    assert update.body == BODY
    assert "published_at" in registry.versions[1]["tags"]
    assert registry.versions[1]["tags"]["published_checksum"] == update.checksum
    assert [e.action for e in audit] == ["published"]


def test_a_restarted_publisher_publishes_nothing_already_on_the_topic(
    world: tuple[FakeRegistry, FakeTopic],
) -> None:
    registry, topic = world
    registry.add(1)
    registry.alias["production"] = 1
    publisher(registry).run_once()
    again = publisher(registry)
    assert statuses(again.run_once()) == [("up_to_date", 1)]
    assert again.published == {"default": 1}
    assert len(topic.updates) == 1


def test_unapproved_or_older_versions_are_refused_and_audited_once(
    world: tuple[FakeRegistry, FakeTopic],
) -> None:
    registry, topic = world
    registry.add(1)
    registry.add(2, state="pending")
    registry.alias["production"] = 2
    audit: list[AuditEvent] = []
    p = publisher(registry, audit)
    assert statuses(p.run_once()) == [("refused", 2)]
    assert statuses(p.run_once()) == [("refused", 2)]
    assert topic.updates == []
    assert [(e.action, e.version) for e in audit] == [("publish_refused", 2)]

    registry.alias["production"] = 1
    assert statuses(p.run_once()) == [("published", 1)]
    registry.add(3)
    registry.alias["production"] = 3
    assert statuses(p.run_once()) == [("published", 3)]
    registry.alias["production"] = 1
    outcome = p.run_once()[0]
    assert (outcome.status, outcome.version) == ("refused", 1)
    assert "rollback" in outcome.detail
    assert [u.version for u in topic.updates] == [1, 3]


def test_a_version_not_ready_waits(world: tuple[FakeRegistry, FakeTopic]) -> None:
    registry, topic = world
    registry.add(1, status="PENDING_REGISTRATION")
    registry.alias["production"] = 1
    p = publisher(registry)
    assert statuses(p.run_once()) == [("wait", 1)]
    registry.versions[1]["status"] = "READY"
    assert statuses(p.run_once()) == [("published", 1)]


def test_no_alias_or_no_model_is_idle(world: tuple[FakeRegistry, FakeTopic]) -> None:
    registry, _ = world
    assert statuses(publisher(registry).run_once()) == [("idle", None)]


def test_kafka_away_skips_the_pass_and_publishes_after(
    world: tuple[FakeRegistry, FakeTopic],
) -> None:
    registry, topic = world
    registry.add(1)
    registry.alias["production"] = 1
    topic.down = True
    p = publisher(registry)
    assert statuses(p.run_once()) == [("error", None)]
    assert p.published is None  # nothing is published before the topic was read
    topic.down = False
    assert statuses(p.run_once()) == [("published", 1)]


def test_mlflow_away_skips_the_pass_and_reconnects(world: tuple[FakeRegistry, FakeTopic]) -> None:
    registry, _ = world
    registry.add(1)
    registry.alias["production"] = 1
    up = {"ok": False}

    def connect(_: MlflowSettings) -> FakeRegistry:
        if not up["ok"]:
            msg = "MLflow at http://fake is not reachable"
            raise RegistryError(msg)
        return registry

    control = ControlSettings.model_validate({"algorithm": "hmac-sha256", "signing_key": KEY})
    p = pub.Publisher(
        KafkaSettings(), MlflowSettings(), control, connect=connect, permission_of=reviewers
    )
    outcome = p.run_once()[0]
    assert (outcome.status, "not reachable" in outcome.detail) == ("error", True)
    up["ok"] = True
    assert statuses(p.run_once()) == [("published", 1)]


@pytest.mark.parametrize("fate", ["lost", "written"])
def test_a_send_of_unknown_fate_is_settled_from_the_topic(
    world: tuple[FakeRegistry, FakeTopic], fate: str
) -> None:
    registry, topic = world
    registry.add(1)
    registry.alias["production"] = 1
    topic.fail_next_send = fate
    p = publisher(registry)
    assert statuses(p.run_once()) == [("error", None)]
    assert p.published is None
    after = statuses(p.run_once())
    assert after == [("published", 1)] if fate == "lost" else [("up_to_date", 1)]
    assert [u.version for u in topic.updates] == [1]
    assert "published_at" in registry.versions[1]["tags"]  # repaired when it was written


def test_the_loop_survives_a_failing_pass(
    world: tuple[FakeRegistry, FakeTopic], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, _ = world
    p = publisher(registry)
    calls = {"n": 0}
    stop = threading.Event()

    def flaky() -> list[pub.Outcome]:
        calls["n"] += 1
        if calls["n"] == 1:
            msg = "bug"
            raise RuntimeError(msg)
        stop.set()
        return []

    monkeypatch.setattr(p, "run_once", flaky)
    p.run(stop)
    assert calls["n"] == 2


def test_a_publisher_without_a_signing_key_does_not_start() -> None:
    with pytest.raises(ConfigError, match="SIGNING_KEY"):
        pub.Publisher(KafkaSettings(), MlflowSettings(), ControlSettings())


def test_an_approval_counts_only_from_a_reviewer_or_the_controllers_own_registration(
    world: tuple[FakeRegistry, FakeTopic],
) -> None:
    registry, topic = world
    audit: list[AuditEvent] = []
    p = publisher(registry, audit)
    registry.add(1)
    registry.versions[1]["tags"]["approved_by"] = "mallory"  # set by hand: no such user
    registry.alias["production"] = 1
    outcome = p.run_once()[0]
    assert (outcome.status, outcome.version) == ("refused", 1)
    assert "not an MLflow user" in outcome.detail
    assert registry.versions[1]["tags"]["publish_refused"] == outcome.detail
    assert [e.action for e in audit] == ["publish_refused"]
    assert topic.updates == []

    registry.add(2)
    registry.versions[2]["tags"]["approved_by"] = "pipeline-controller"  # the service account
    registry.alias["production"] = 2
    assert "only automatically" in p.run_once()[0].detail

    registry.add(3)
    registry.alias["production"] = 3  # approved by ann, a reviewer
    assert statuses(p.run_once()) == [("published", 3)]
    assert audit[-1].action == "published" and audit[-1].details["approved_by"] == "ann"


@pytest.mark.parametrize(
    ("tags", "level", "automatic", "refused"),
    [
        ({"approved_by": "ann"}, "EDIT", False, None),
        ({"approved_by": "ann"}, "MANAGE", False, None),
        ({"approved_by": "ann"}, "READ", False, "not the reviewer permission"),
        ({"approved_by": "ann"}, None, False, "not an MLflow user"),
        ({}, None, False, "records no approver"),
        ({"approved_by": "auto"}, None, True, None),
        ({"approved_by": "controller"}, None, True, None),
        ({"approved_by": "auto"}, None, False, "no automatic registration"),
        ({"approved_by": "svc"}, "MANAGE", False, "only automatically"),
    ],
)
def test_approver_rules(
    tags: dict[str, str], level: str | None, automatic: bool, refused: str | None
) -> None:
    from pipeline.publisher.gate import approver_refusal, automatic_registration

    why = approver_refusal(
        7, "m", tags, service_account="svc", approver_level=level, automatic=automatic
    )
    assert (why is None) if refused is None else (refused in (why or ""))
    assert automatic_registration({"auto_approve": "True"})
    assert automatic_registration({"canary_of": "3"})
    assert not automatic_registration({"auto_approve": "False"})
