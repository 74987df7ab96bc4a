"""`pipeline keys generate`: an Ed25519 key pair for signing control updates.

The private key stays with the publisher (``PIPELINE_CONTROL__PRIVATE_KEY_FILE``);
nodes get only the public half (``PIPELINE_NODE__PUBLIC_KEYS``), so no node can
forge an update. Rotation: generate a new pair, add its public key to the
nodes next to the old one, switch the publisher, then revoke the old id.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

import typer

from pipeline.cli._app import app, console
from pipeline.errors import ConfigError

keys_app = typer.Typer(help="Ed25519 keys that sign control updates.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

OUT = typer.Option(..., "--out", help="Folder for the key files (created if needed).")
KEY_ID = typer.Option(
    None, "--key-id", help="Key id put on updates (default: control-<date>-<random>)."
)
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def write_key_pair(out: Path, key_id: str) -> tuple[Path, Path, str]:
    """Write ``<key_id>.pem`` (private, mode 0600) and ``<key_id>.pub`` into ``out``.

    Returns the two paths and the public key (base64 of its 32 raw bytes).

    Raises:
        ConfigError: if ``key_id`` is not a valid id or either file exists already.
    """
    from schemas.signing import generate_ed25519

    if not _KEY_ID.match(key_id):
        msg = f"key id {key_id!r}: use letters, digits, '.', '_', '-' (at most 128)"
        raise ConfigError(msg)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{key_id}.pem", out / f"{key_id}.pub"
    for path in (private, public):
        if path.exists():
            msg = f"{path} exists; refusing to overwrite a key (choose another --key-id)"
            raise ConfigError(msg)
    pem, public_b64 = generate_ed25519()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
    finally:
        os.close(fd)
    public.write_text(public_b64 + "\n")
    return private, public, public_b64


@keys_app.command("generate")
def generate(out: Path = OUT, key_id: str | None = KEY_ID) -> None:
    """Write a new key pair and print the public key and the settings that use it."""
    kid = key_id or f"control-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    private, public, public_b64 = write_key_pair(out, kid)
    nodes = json.dumps({kid: public_b64})
    console.print(f"private key (publisher only, mode 0600): {private.resolve()}", highlight=False)
    console.print(f"public key: {public_b64}  ({public.resolve()})", highlight=False)
    console.print("nodes (add to any keys they already trust during a rollover):")
    console.print(f"PIPELINE_NODE__PUBLIC_KEYS='{nodes}'", highlight=False, markup=False)
    console.print("publisher:")
    console.print(f"PIPELINE_CONTROL__PRIVATE_KEY_FILE={private.resolve()}", highlight=False)
    console.print(f"PIPELINE_CONTROL__SIGNING_KEY_ID={kid}", highlight=False)
