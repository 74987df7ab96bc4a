"""The last-good store, the node settings and the packaged default policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.node import LoadBands, NodeSettings, PolicyStore, default_policy_body
from pipeline.node.snapshot import default_policy_bytes, default_snapshot
from schemas import PolicyBody

REPO = Path(__file__).resolve().parents[2]


def test_store_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "node", "default")
    assert store.load() is None
    store.save(b"first")
    store.save(b"second")
    assert store.load() == b"second"
    assert os.listdir(tmp_path / "node") == ["default.last-good.json"]


def test_store_keeps_the_old_file_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PolicyStore(tmp_path, "default")
    store.save(b"good")

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        store.save(b"new")
    assert store.load() == b"good"
    assert os.listdir(tmp_path) == ["default.last-good.json"]


def test_packaged_default_policy_is_the_reviewed_one() -> None:
    assert default_policy_bytes() == (REPO / "policies" / "default_policy.json").read_bytes()


def test_default_policy_is_safe() -> None:
    body = default_policy_body()
    assert isinstance(body, PolicyBody)
    assert body.candidate_segments is None and body.canary_share == 0.0
    for policy in body.segments.values():
        assert set(policy.thresholds.values()) == {1.0}  # stop early only at certainty
    snap = default_snapshot("fleet-a")
    assert (snap.version, snap.source, snap.policy_name) == (0, "default", "fleet-a")


def test_node_settings_defaults_are_usable() -> None:
    node = NodeSettings()
    assert node.node_id and node.state_dir.is_absolute()
    assert node.hmac_keys() == {}


class _Wired(BaseSettings):
    """How Settings would carry the section: field `node`, prefix PIPELINE_, nested `__`."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )
    node: NodeSettings = NodeSettings()


def test_node_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_NODE__NODE_ID", "gpu-7")
    monkeypatch.setenv("PIPELINE_NODE__SIGNING_KEYS", '{"k-2024": "s3cret"}')
    monkeypatch.setenv("PIPELINE_NODE__LOAD__PEAK_ENTER", "0.9")
    monkeypatch.setenv("PIPELINE_NODE__EMITTER__MAX_BUFFERED_MESSAGES", "500")
    node = _Wired().node
    assert node.node_id == "gpu-7"
    assert node.hmac_keys() == {"k-2024": b"s3cret"}
    assert "s3cret" not in repr(node)
    assert node.load.peak_enter == 0.9
    assert node.emitter.max_buffered_messages == 500


def test_signing_keys_survive_settings_env_and_stay_secret() -> None:
    node = NodeSettings(signing_keys={"k1": "abc", "k2": SecretStr("def")})
    assert node.hmac_keys() == {"k1": b"abc", "k2": b"def"}
    assert "abc" not in repr(node)
    again = NodeSettings(signing_keys=SecretStr(node.signing_keys.get_secret_value()))
    assert again.hmac_keys() == node.hmac_keys()


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"k": 3}', '{"": "x"}'])
def test_malformed_signing_keys_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ValidationError, match="expected a JSON object") as info:
        NodeSettings(signing_keys=SecretStr(bad))
    assert all(bad not in e["msg"] for e in info.value.errors())


def test_load_bands_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="offpeak_enter < offpeak_exit"):
        LoadBands(peak_exit=0.9, peak_enter=0.8)
