"""Reviewers are authenticated: MLflow's basic-auth app decides who may approve, and the
publisher publishes only what a reviewer (or the controller's own registration) approved.

Everything runs against the session stack's real MLflow server with its auth
database: the review commands as ``pipeline`` child processes with a user's
login in ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, the
publisher with the settings the controller has (service account, admin
password from the state folder), audit events read back from Kafka.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.audit import KafkaAuditLog
from pipeline.config import Settings
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.service import PassResult, Publisher
from pipeline.registry import auth
from pipeline.registry.policies import register_proposal
from pipeline.registry.versions import aliases, get_version
from pipeline.stack.mlflow_auth import admin_login
from tests.integration._control import (
    audit_events,
    control_updates,
    mlflow_user,
    policy_cli,
    proposal,
)
from tests.integration.support import run_cli

pytestmark = pytest.mark.integration

KEY = "integration-reviewers-key"


@pytest.fixture
def model_name(isolated: Settings, ml: Any) -> str:
    """A policy family with one pending version (v1), registered by the service account."""
    name = f"test-review-{uuid.uuid4().hex[:12]}"
    register_proposal(ml, proposal(0.8), experiment=isolated.mlflow.experiment, model_name=name)
    return name


@pytest.fixture
def publisher(isolated: Settings, model_name: str) -> Iterator[Publisher]:
    """The publisher as the controller runs it: service account, admin password from the files."""
    control = ControlSettings.model_validate(
        {
            "models": {"default": model_name},
            "algorithm": "hmac-sha256",
            "signing_key": KEY,
            "bootstrap_timeout_s": 20,
        }
    )
    audit = KafkaAuditLog(isolated.kafka, "policy-audit")
    made = Publisher(isolated.kafka, isolated.mlflow, control, audit=audit)
    yield made
    made.close()
    audit.close()


def raw_post(settings: Settings, path: str, body: dict[str, str], login: str | None) -> int:
    """POST to MLflow's REST API with a basic-auth header, or none; the HTTP status."""
    req = urllib.request.Request(  # noqa: S310  # the session stack's loopback URL
        f"{settings.mlflow.tracking_uri}{path}", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    if login is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=20) as reply:  # noqa: S310
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def outcome(results: list[PassResult]) -> tuple[str, int | None, str]:
    (one,) = results
    return one.status, one.version, one.detail


def test_an_approval_by_an_unauthenticated_caller_fails(
    isolated: Settings, ml: Any, model_name: str
) -> None:
    alias = {"name": model_name, "alias": "production", "version": "1"}
    path = "/api/2.0/mlflow/registered-models/alias"
    assert raw_post(isolated, path, alias, login=None) == 401
    assert raw_post(isolated, path, alias, login="ann:not-her-password") == 401

    mlflow_user(isolated, "ann", model_name)
    wrong = {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "not-her-password"}
    refused = policy_cli(
        isolated, "approve", "1", "--reason", "ok", "--model", model_name, env=wrong
    )
    assert refused.returncode == 1
    assert "refused the login of 'ann'" in refused.stderr
    assert "not-her-password" not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr

    # The service account (every pipeline process's login) makes no review.
    service = policy_cli(isolated, "approve", "1", "--reason", "ok", "--model", model_name)
    assert service.returncode == 1 and "service account" in service.stderr

    assert get_version(ml, model_name, 1).review_state == "pending"
    assert "production" not in aliases(ml, model_name)
    assert [e for e in audit_events(isolated.kafka) if e.model_name == model_name] == []


def test_an_approval_by_a_user_without_the_reviewer_permission_is_refused_and_audited(
    isolated: Settings, ml: Any, model_name: str, publisher: Publisher
) -> None:
    carol = mlflow_user(isolated, "carol")  # authenticated, reads like anyone, reviews nothing
    done = policy_cli(isolated, "approve", "1", "--reason", "ok", "--model", model_name, env=carol)
    assert done.returncode == 1
    assert "carol holds READ permission" in done.stderr and "Traceback" not in done.stderr
    # MLflow itself refuses her writes too, whatever client she uses.
    login = f"carol:{carol['MLFLOW_TRACKING_PASSWORD']}"
    alias = {"name": model_name, "alias": "production", "version": "1"}
    assert raw_post(isolated, "/api/2.0/mlflow/registered-models/alias", alias, login) == 403
    assert "production" not in aliases(ml, model_name)
    assert outcome(publisher.run_once())[0] == "idle"

    # An approval set by hand in her name (the admin in the UI: tags and the alias).
    admin = admin_login(isolated)
    for key, value in {"review_state": "approved", "approved_by": "carol"}.items():
        tag = {"name": model_name, "version": "1", "key": key, "value": value}
        auth.request(admin, "POST", "/api/2.0/mlflow/model-versions/set-tag", body=tag)
    auth.request(admin, "POST", "/api/2.0/mlflow/registered-models/alias", body=alias)

    for _ in range(2):
        status, version, detail = outcome(publisher.run_once())
        assert (status, version) == ("refused", 1)
        assert "approved by carol, who holds READ" in detail
    assert control_updates(isolated.kafka) == []
    v1 = get_version(ml, model_name, 1)
    assert "published_at" not in v1.tags
    assert "carol" in v1.tags["publish_refused"]

    events = [e for e in audit_events(isolated.kafka) if e.model_name == model_name]
    assert [(e.action, e.actor) for e in events] == [
        ("review_refused", "carol"),
        ("publish_refused", "publisher"),
    ]
    assert events[0].details == {"action": "approve"}
    assert "carol" in events[1].reason


def test_a_reviewers_approval_is_published_and_its_audit_event_names_the_user(
    isolated: Settings, ml: Any, model_name: str, publisher: Publisher
) -> None:
    # An admin adds the reviewer; the generated password is printed once.
    models = {"PIPELINE_CONTROL__MODELS": f"default={model_name}"}
    added = run_cli(isolated, "reviewers", "add", f"dave-{model_name[-6:]}", env=models)
    assert added.returncode == 0, added.stderr
    assert f"MANAGE on registered_model {model_name}" in added.stdout
    name, password = f"dave-{model_name[-6:]}", added.stdout.split()[-1]
    admin_password = isolated.mlflow.admin_password
    assert admin_password is not None
    assert admin_password.get_secret_value() not in added.stdout + added.stderr

    dave = {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}
    done = policy_cli(
        isolated, "approve", "1", "--reason", "EM ok", "--model", model_name, env=dave
    )
    assert done.returncode == 0, done.stderr
    v1 = get_version(ml, model_name, 1)
    assert (v1.review_state, v1.tags["approved_by"], v1.tags["who"]) == ("approved", name, name)

    assert outcome(publisher.run_once())[:2] == ("published", 1)
    assert [u.version for u in control_updates(isolated.kafka)] == [1]
    events = [e for e in audit_events(isolated.kafka) if e.model_name == model_name]
    assert [(e.action, e.actor) for e in events] == [
        ("approved", name),
        ("published", "publisher"),
    ]
    assert events[1].details["approved_by"] == name
    assert name in events[1].reason

    # Removed, the same user can no longer approve.
    removed = run_cli(isolated, "reviewers", "remove", name, env=models)
    assert removed.returncode == 0, removed.stderr
    admin = admin_login(isolated)
    assert auth.permission(admin, name, "registered_model", model_name) == "READ"
