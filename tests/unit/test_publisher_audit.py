"""The audit record and the control settings."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from pipeline.audit import AuditEvent, best_effort
from pipeline.config import Settings, settings_env
from pipeline.errors import AuditError
from pipeline.publisher.config import ControlSettings


def event(**kw: object) -> AuditEvent:
    base: dict[str, object] = {
        "policy_name": "default",
        "model_name": "earlystop-policy-default",
        "version": 7,
        "actor": "ann",
        "reason": "EM holds on the canary",
        "details": {"rollback_of": 6, "restores": 4},
    }
    return AuditEvent.new("rolled_back", **{**base, **kw})  # type: ignore[arg-type]  # test data


def test_an_event_survives_the_wire_and_stringifies_details() -> None:
    e = event()
    back = AuditEvent.from_bytes(e.to_bytes())
    assert back == e
    assert back.details == {"rollback_of": "6", "restores": "4"}
    assert back.ts.tzinfo is not None
    assert json.loads(e.to_bytes())["schema_version"] == 1


def test_each_event_has_its_own_id() -> None:
    assert event().event_id != event().event_id


@pytest.mark.parametrize(
    "bad",
    [{"version": 0}, {"actor": "two words"}, {"policy_name": ""}],
)
def test_bad_events_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        event(**bad)


def test_unknown_actions_and_fields_are_refused() -> None:
    data = json.loads(event().to_bytes())
    with pytest.raises(ValidationError):
        AuditEvent.model_validate({**data, "action": "deleted"})
    with pytest.raises(ValidationError):
        AuditEvent.model_validate({**data, "extra": 1})


def test_long_reasons_are_cut_not_refused() -> None:
    assert len(event(reason="x" * 5000).reason) == 1024


def test_best_effort_swallows_sink_failures() -> None:
    seen: list[AuditEvent] = []

    def broken(e: AuditEvent) -> None:
        seen.append(e)
        msg = "broker away"
        raise AuditError(msg)

    best_effort(broken)(event())
    best_effort(None)(event())
    assert len(seen) == 1


def test_control_settings_name_models_and_keep_the_key_secret() -> None:
    control = ControlSettings.model_validate(
        {"models": {"fleet-b": "custom-model"}, "signing_key": "s3cret"}
    )
    assert control.models == "fleet-b=custom-model"
    assert control.model_name("default") == "earlystop-policy-default"
    assert control.model_name("fleet-b") == "custom-model"
    assert control.hmac_key() == b"s3cret"
    assert "s3cret" not in repr(control)
    assert ControlSettings().hmac_key() == b""
    assert ControlSettings(policies="a,b,a").policy_names() == ("a", "b")
    assert ControlSettings.model_validate({"policies": ["x", "y"]}).policies == "x,y"
    for bad in ({"models": {"x": "bad name"}}, {"models": "x"}, {"policies": "a,,b"}):
        with pytest.raises(ValidationError):
            ControlSettings.model_validate(bad)


class Wired(Settings):
    """Settings as they will be once `control` is wired in (the way NodeSettings is)."""

    control: ControlSettings = ControlSettings()


def test_the_section_reads_from_the_environment_and_survives_settings_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_CONTROL__SIGNING_KEY", "k3y")
    monkeypatch.setenv("PIPELINE_CONTROL__POLICIES", "default,fleet-b")
    monkeypatch.setenv("PIPELINE_CONTROL__MODELS", "fleet-b=fleet-b-model")
    monkeypatch.setenv("PIPELINE_CONTROL__AUTO_APPROVE", "false")
    wired = Wired()
    assert wired.control.policy_names() == ("default", "fleet-b")
    assert wired.control.model_name("fleet-b") == "fleet-b-model"
    assert wired.control.hmac_key() == b"k3y"
    assert wired.control.auto_approve is False

    env = settings_env(wired)
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Wired().control == wired.control
