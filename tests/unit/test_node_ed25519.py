"""Ed25519 control signatures: the node trusts public keys only, revokes ids, refuses downgrades."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.cli.keys import write_key_pair
from pipeline.config import MlflowSettings
from pipeline.errors import ConfigError
from pipeline.node import Limits, NodeSettings, Trust, verify_update
from pipeline.node.kafka import KafkaSettings
from pipeline.node.testing import ed25519_update, signed_update
from pipeline.publisher.config import ControlSettings
from pipeline.publisher.service import Publisher
from schemas import PolicyBody, SegmentPolicy, ThresholdUpdate, body_checksum
from schemas.signing import (
    Ed25519PrivateKey,
    ed25519_sign,
    ed25519_verify,
    load_private_key,
    load_public_key,
    public_key_text,
)

LIMITS = Limits(max_token_budget=4096, max_exploration_share=0.2, max_canary_share=0.5)
OLD, NEW = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def body(threshold: float = 0.9) -> PolicyBody:
    policy = SegmentPolicy(thresholds={"normal": threshold}, min_tokens=4, token_budget=512)
    return PolicyBody(segments={"global": policy}, exploration_share=0.05)


def node(**fields: object) -> NodeSettings:
    keys = {"old": public_key_text(OLD.public_key()), "new": public_key_text(NEW.public_key())}
    return NodeSettings.model_validate({"public_keys": keys, **fields})


def refusal(update: ThresholdUpdate | bytes, settings: NodeSettings | None = None) -> str | None:
    raw = update if isinstance(update, bytes) else update.to_bytes()
    trust = Trust.from_settings(settings or node())
    return verify_update(raw, policy_name="default", keys=trust, limits=LIMITS).refusal


def test_an_ed25519_update_round_trips_under_either_trusted_key() -> None:
    for kid, key in (("old", OLD), ("new", NEW)):
        update = ed25519_update(body(), version=3, private_key=key, key_id=kid)
        assert update.algorithm == "ed25519" and update.signing_key_id == kid
        assert refusal(update) is None


def test_a_tampered_body_is_refused() -> None:
    update = ed25519_update(body(0.9), version=3, private_key=OLD, key_id="old")
    changed = body(0.1)  # a consistent checksum, the original signature
    checksum = body_checksum("default", 3, update.created_at, changed)
    tampered = update.model_copy(update={"body": changed, "checksum": checksum})
    assert ThresholdUpdate.from_bytes(tampered.to_bytes()) == tampered  # it parses
    assert refusal(tampered) == "signature does not verify under key 'old'"
    # Signed by one key, claimed under the other: also refused.
    swapped = ed25519_update(body(), version=3, private_key=NEW, key_id="old")
    assert refusal(swapped) == "signature does not verify under key 'old'"


def test_an_unknown_key_id_is_refused() -> None:
    stranger = Ed25519PrivateKey.generate()
    update = ed25519_update(body(), version=3, private_key=stranger, key_id="stranger")
    assert "unknown signing key id 'stranger'" in (refusal(update) or "")
    no_keys = NodeSettings()
    assert "no Ed25519 public keys" in (refusal(update, no_keys) or "")


def test_a_revoked_key_is_refused_even_though_its_signature_verifies() -> None:
    update = ed25519_update(body(), version=3, private_key=OLD, key_id="old")
    assert refusal(update) is None
    assert refusal(update, node(revoked_keys=["old"])) == "signing key id 'old' is revoked"
    assert refusal(update, node(revoked_keys="other,old")) == "signing key id 'old' is revoked"
    fresh = ed25519_update(body(), version=4, private_key=NEW, key_id="new")
    assert refusal(fresh, node(revoked_keys=["old"])) is None


def test_hmac_is_refused_unless_the_settings_allow_it() -> None:
    hmac = signed_update(body(), version=3, key=b"shared", key_id="h1")
    settings = node(signing_keys={"h1": "shared"})  # the key is there, HMAC is not allowed
    assert settings.algorithms() == {"ed25519"}
    reason = refusal(hmac, settings) or ""
    assert "'hmac-sha256' is not supported" in reason and "allow ed25519" in reason
    both = node(signing_keys={"h1": "shared"}, allowed_algorithms="ed25519,hmac-sha256")
    assert refusal(hmac, both) is None
    hmac_only = node(signing_keys={"h1": "shared"}, allowed_algorithms=["hmac-sha256"])
    ed = ed25519_update(body(), version=3, private_key=OLD, key_id="old")
    assert "'ed25519' is not supported" in (refusal(ed, hmac_only) or "")


def test_the_nodes_material_cannot_forge_an_update() -> None:
    settings = node()
    public = settings.ed25519_keys()["old"]
    with pytest.raises(TypeError, match="private key"):
        ed25519_sign(public, b"payload")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="private key"):
        ed25519_update(body(), version=3, private_key=public, key_id="old")  # type: ignore[arg-type]
    # What a compromised node holds, used as an HMAC secret under a trusted id: refused.
    as_secret = public_key_text(public).encode()
    forged = signed_update(body(threshold=0.1), version=9, key=as_secret, key_id="old")
    assert "'hmac-sha256' is not supported" in (refusal(forged, settings) or "")
    lax = node(allowed_algorithms=["ed25519", "hmac-sha256"])
    assert "no signing keys" in (refusal(forged, lax) or "")


def test_verify_rejects_malformed_signatures() -> None:
    public = OLD.public_key()
    good = ed25519_sign(OLD, b"payload")
    assert ed25519_verify(public, b"payload", good)
    assert not ed25519_verify(public, b"payload!", good)
    assert not ed25519_verify(public, b"payload", "not base64 at all!")
    assert not ed25519_verify(public, b"payload", "AAAA")


class _Wired(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )
    node: NodeSettings = NodeSettings()


def test_node_key_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private, public, text = write_key_pair(tmp_path, "k-2026")
    pem = load_private_key(private).public_key()
    monkeypatch.setenv("PIPELINE_NODE__PUBLIC_KEYS", json.dumps({"k-2026": text, "pem": text}))
    monkeypatch.setenv("PIPELINE_NODE__REVOKED_KEYS", '["k-2025"]')
    monkeypatch.setenv("PIPELINE_NODE__ALLOWED_ALGORITHMS", "ed25519")
    settings = _Wired().node
    assert public_key_text(settings.ed25519_keys()["k-2026"]) == public_key_text(pem)
    assert settings.revoked() == {"k-2025"} and settings.algorithms() == {"ed25519"}
    assert public.read_text().strip() == text
    again = NodeSettings(public_keys=settings.public_keys, revoked_keys=settings.revoked_keys)
    assert again.ed25519_keys().keys() == settings.ed25519_keys().keys()


def test_public_keys_in_pem_are_accepted_and_bad_ones_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = (
        OLD.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert public_key_text(load_public_key(pem)) == public_key_text(OLD.public_key())
    for bad in ({"k": "not-a-key"}, {"k": "AAAA"}, {"k": "-----BEGIN PUBLIC KEY-----\nxx"}):
        with pytest.raises(ValidationError, match="public key 'k'"):
            NodeSettings(public_keys=bad)
    with pytest.raises(ValidationError, match="base64 or PEM public key"):
        NodeSettings(public_keys="not json")
    with pytest.raises(ValidationError):
        NodeSettings(allowed_algorithms=["none"])
    with pytest.raises(ValidationError):
        NodeSettings(allowed_algorithms="")


def test_the_publisher_needs_a_private_key_file_of_mode_0600(tmp_path: Path) -> None:
    private, _, _ = write_key_pair(tmp_path, "pub-1")
    assert os.stat(private).st_mode & 0o777 == 0o600

    def start(**fields: object) -> Publisher:
        control = ControlSettings.model_validate(fields)
        return Publisher(KafkaSettings(), MlflowSettings(), control)

    assert ControlSettings().algorithm == "ed25519"
    with pytest.raises(ConfigError, match="PRIVATE_KEY_FILE is not set"):
        start(signing_key="an-hmac-key")  # HMAC is never chosen implicitly
    start(private_key_file=private, signing_key_id="pub-1").close()
    private.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644; it must be 0600") as info:
        start(private_key_file=private)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        start(private_key_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="SIGNING_KEY is empty"):
        start(algorithm="hmac-sha256")
    start(algorithm="hmac-sha256", signing_key=SecretStr("weaker")).close()


def test_keys_generate_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    write_key_pair(tmp_path, "k1")
    with pytest.raises(ConfigError, match="exists"):
        write_key_pair(tmp_path, "k1")
    with pytest.raises(ConfigError, match="key id"):
        write_key_pair(tmp_path, "bad id")


def test_keys_generate_prints_the_public_half_and_the_env_lines(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli._app import _register, app

    _register()
    done = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path), "--key-id", "c-1"])
    assert done.exit_code == 0, done.output
    private = tmp_path / "c-1.pem"
    assert os.stat(private).st_mode & 0o777 == 0o600
    public = (tmp_path / "c-1.pub").read_text().strip()
    assert f"public key: {public}" in done.output
    env_line = next(x for x in done.output.splitlines() if x.startswith("PIPELINE_NODE__"))
    value = env_line.split("=", 1)[1].strip("'")
    settings = NodeSettings(public_keys=value)
    assert public_key_text(settings.ed25519_keys()["c-1"]) == public
    assert f"PIPELINE_CONTROL__PRIVATE_KEY_FILE={private.resolve()}" in done.output
    # The pair works end to end: what the private key signs, the printed public key verifies.
    update = ed25519_update(body(), version=2, private_key=load_private_key(private), key_id="c-1")
    assert refusal(update, settings) is None


def test_key_settings_survive_settings_env_to_a_child(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipeline.config import load_settings, settings_env

    private, _, text = write_key_pair(tmp_path, "k9")
    node_fields = {"public_keys": {"k9": text}, "revoked_keys": ["k8"]}
    control_fields = {"private_key_file": private, "signing_key_id": "k9"}
    parent = load_settings(node=node_fields, control=control_fields)
    for name, value in settings_env(parent).items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.node.ed25519_keys().keys() == {"k9"} and child.node.revoked() == {"k8"}
    assert child.node.algorithms() == {"ed25519"}
    assert (child.control.algorithm, child.control.private_key_file) == ("ed25519", private)
