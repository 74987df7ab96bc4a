"""Signatures over canonical bytes: Ed25519 (the default) and HMAC-SHA256.

Ed25519 is asymmetric: the publisher alone holds the private key and nodes
hold only public keys, so no node can forge an update. HMAC-SHA256 is kept
as a weaker option: every verifier holds the signing secret itself. Key
storage and rotation belong to the caller; this module only signs, verifies,
loads and generates keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "ed25519_sign",
    "ed25519_verify",
    "generate_ed25519",
    "hmac_sign",
    "hmac_verify",
    "load_private_key",
    "load_public_key",
    "public_key_text",
]


def hmac_sign(key: bytes, payload: bytes) -> str:
    """Return the HMAC-SHA256 of ``payload`` as lower-case hex.

    Raises:
        ValueError: if ``key`` is empty.
    """
    if not key:
        msg = "the HMAC key is empty"
        raise ValueError(msg)
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def hmac_verify(key: bytes, payload: bytes, signature: str) -> bool:
    """Return True when ``signature`` (hex) is the HMAC-SHA256 of ``payload``.

    The comparison takes constant time; a malformed signature is simply False.

    Raises:
        ValueError: if ``key`` is empty.
    """
    expected = bytes.fromhex(hmac_sign(key, payload))
    try:
        given = bytes.fromhex(signature)
    except ValueError:
        return False
    return hmac.compare_digest(expected, given)


def ed25519_sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    """Return the Ed25519 signature of ``payload`` as standard base64 (88 characters).

    Raises:
        TypeError: if ``private_key`` is not an Ed25519 private key (a public key cannot sign).
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        msg = f"an Ed25519 private key is needed to sign, not {type(private_key).__name__}"
        raise TypeError(msg)
    return base64.b64encode(private_key.sign(payload)).decode("ascii")


def ed25519_verify(public_key: Ed25519PublicKey, payload: bytes, signature: str) -> bool:
    """Return True when ``signature`` (base64) is an Ed25519 signature of ``payload``.

    A malformed signature is simply False.
    """
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, payload)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of ``public_key`` as standard base64 (what nodes are given)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """Parse an Ed25519 public key: PEM (SubjectPublicKeyInfo) or base64 of the 32 raw bytes.

    Raises:
        ValueError: if ``text`` is neither (the message does not quote it).
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm):
            msg = "not a readable PEM public key"
            raise ValueError(msg) from None
        if not isinstance(key, Ed25519PublicKey):
            msg = "the PEM public key is not an Ed25519 key"
            raise ValueError(msg)
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:  # noqa: PLR2004  # the size of an Ed25519 public key
        msg = "expected a PEM public key or the base64 of 32 raw Ed25519 bytes"
        raise ValueError(msg)
    return Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted PEM (PKCS#8) Ed25519 private key that only its owner can read.

    Raises:
        ValueError: if the file is missing, readable by group or others (it must
            be 0600 or stricter), or not an Ed25519 private key; one line.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the private key {path}: {exc.strerror or exc}"
        raise ValueError(msg) from None
    if mode & 0o077:
        msg = f"the private key {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})"
        raise ValueError(msg)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        msg = f"{path} is not an unencrypted PEM private key"
        raise ValueError(msg) from None
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{path} is not an Ed25519 private key"
        raise ValueError(msg)
    return key


def generate_ed25519() -> tuple[bytes, str]:
    """A new key pair: the private key as PEM (PKCS#8, unencrypted) and the public base64."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_key_text(private.public_key())
