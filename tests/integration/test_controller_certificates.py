"""Anytime certificates on the real stack: each request is fed once, and the book survives.

Outcomes are written straight into ClickHouse (what the sink writes) under a
uuid policy name; cycles run against the real ClickHouse and MLflow.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from pipeline.config import Settings
from pipeline.controller.certificates import book_path, load_book
from pipeline.controller.config import ControllerSettings
from pipeline.controller.cycle import run_cycle
from pipeline.optimizer import PolicySpec
from pipeline.publisher.config import ControlSettings
from pipeline.registry.client import connect as mlflow_connect
from pipeline.registry.versions import get_version, load_policy
from tests.integration._control import exploration, insert, outcome
from tests.unit._optimizer_data import spec_with

pytestmark = [pytest.mark.integration]

KEY = "acme/qa/short"


def make_spec(name: str) -> PolicySpec:
    return spec_with(
        name=name,
        min_samples=200,
        risk={"method": "anytime", "loss": "signed", "split": "none"},
        auto_approve={"max_step": 0.05, "max_em_drop_bound": 0.05, "min_samples": 200},
        canary={"share": 0.0, "min_samples": 100, "max_samples": 5000, "alpha": 0.05},
    )


@pytest.fixture
def settings(isolated: Settings) -> Settings:
    policy = f"ac{uuid.uuid4().hex[:10]}"
    control = ControlSettings.model_validate(
        {
            "policies": policy,
            "models": {policy: f"test-certificates-{policy}"},
            "algorithm": "hmac-sha256",
            "signing_key_id": "control-it",
            "signing_key": "integration-certificates-key",
        }
    )
    # Requests are fed as soon as they are made, so the test needs no waiting.
    return isolated.model_copy(
        update={"control": control, "controller": ControllerSettings(label_wait_s=0)}
    )


def test_cycles_feed_each_request_once_and_keep_the_certificates(settings: Settings) -> None:
    policy = settings.control.policies.split(",")[0]
    spec = make_spec(policy)
    insert(settings, exploration(policy, 600, age=timedelta(minutes=10)))
    first = run_cycle(settings, spec)
    assert (first.status, first.route, first.version) == ("registered", "production", 1)
    saved = load_book(book_path(settings.state_dir, policy), spec)
    assert saved.book.populations[KEY].curve.n == 600
    assert saved.watermark is not None
    certified = saved.book.populations[KEY].deployable(spec.epsilon(KEY, "normal"))
    assert certified, "600 loss-free samples certify at epsilon 0.02"

    # A request made before the watermark whose outcome lands late is never fed
    # (the order of the feed must not depend on outcomes); new ones are.
    late = [outcome(policy, i, ts=saved.watermark - timedelta(seconds=30), exploration=True)
            for i in range(50)]  # fmt: skip
    insert(settings, late + exploration(policy, 300, age=timedelta(seconds=0)))
    second = run_cycle(settings, spec)
    again = load_book(book_path(settings.state_dir, policy), spec)
    assert again.book.populations[KEY].curve.n == 900
    assert again.watermark is not None and again.watermark > saved.watermark
    assert second.samples == 900

    # The certificates, not a window, decide: the next cycle moves one more step
    # although it reads nothing new.
    third = run_cycle(settings, spec)
    assert third.status == "registered" and third.version == 3
    ml = mlflow_connect(settings.mlflow)
    model = settings.control.model_name(policy)
    bodies = [load_policy(ml, get_version(ml, model, v)) for v in (1, 2, 3)]
    normal = [b.segments[KEY].thresholds["normal"] for b in bodies]
    assert normal == pytest.approx([0.95, 0.90, 0.85])
    assert (
        load_book(book_path(settings.state_dir, policy), spec).book.populations[KEY].curve.n == 900
    )
