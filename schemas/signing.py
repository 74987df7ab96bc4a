"""HMAC-SHA256 signatures over canonical bytes (stdlib only).

Key storage and rotation belong to the caller; Ed25519 is not implemented here.
"""

from __future__ import annotations

import hashlib
import hmac


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
