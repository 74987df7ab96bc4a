"""Secrets the embedded stack generates and keeps under the state folder.

Each secret is one file in ``<state_dir>/secrets/`` (mode 0700), readable by
its owner only (mode 0600), created once by ``pipeline up`` and reused by
every later start, so restarting never changes it. A file that others can
read is refused rather than trusted: the secret may have leaked, and the
fix (``chmod 600``, then rotate) is the operator's.

An explicitly configured value (an environment variable) always wins over
the file; the file fills in a setting nobody set. Values never appear in
messages: only paths do.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from pipeline.errors import SecretFileError

WAREHOUSE_PASSWORD = "clickhouse-writer-password"  # noqa: S105  # a file name, not a secret
"""The embedded warehouse's writer password (``PIPELINE_CLICKHOUSE__PASSWORD``)."""
MLFLOW_ADMIN_PASSWORD = "mlflow-admin-password"  # noqa: S105  # a file name, not a secret
"""The embedded MLflow's admin password (``PIPELINE_MLFLOW__ADMIN_PASSWORD``)."""
MLFLOW_SERVICE_PASSWORD = "mlflow-controller-password"  # noqa: S105  # a file name
"""The controller's and publisher's MLflow service account (``PIPELINE_MLFLOW__PASSWORD``)."""
MLFLOW_FLASK_SECRET = "mlflow-flask-secret-key"  # noqa: S105  # a file name, not a secret
"""The key MLflow's basic-auth app signs its CSRF tokens with (the server's only)."""


def secrets_dir(state_dir: Path) -> Path:
    """The folder that holds the generated secrets of a state folder."""
    return state_dir / "secrets"


def secret_path(state_dir: Path, name: str) -> Path:
    """Where the secret ``name`` of a state folder is kept."""
    return secrets_dir(state_dir) / name


def read_secret(path: Path) -> SecretStr | None:
    """The secret stored at ``path``, or None when there is no such file.

    Raises:
        SecretFileError: the file can be read by its group or others, or not at all.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read the secret file {path}: {exc.strerror}"
        raise SecretFileError(msg) from None
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            msg = (
                f"the secret file {path} has mode {mode:04o}: others may have read it. "
                f"Run `chmod 600 {path}` and rotate the secret (see the README's Security section)"
            )
            raise SecretFileError(msg)
        value = handle.read().strip()
    if not value:
        msg = f"the secret file {path} is empty: remove it and run `pipeline up` to generate one"
        raise SecretFileError(msg)
    return SecretStr(value)


def _write_private(path: Path, value: str) -> bool:
    """Create ``path`` holding ``value`` with mode 0600; False when it already exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)  # mkdir's mode is masked by the umask; an old folder keeps its own
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (value + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _write_new(path: Path, value: str) -> bool:
    """Make ``path`` hold ``value`` (mode 0600) unless it exists; False when it did.

    The secret is written to a private temporary file first and hard-linked to
    ``path`` (which fails when ``path`` exists), so ``path`` appears with its
    whole content: a racing start never reads it empty.
    """
    tmp = _write_temporary(path, value)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _write_temporary(path: Path, value: str) -> Path:
    """A new private file beside ``path`` holding ``value``; its path."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    if not _write_private(tmp, value):
        msg = f"cannot create {tmp}: it exists"
        raise SecretFileError(msg)
    return tmp


def ensure_secret(path: Path) -> tuple[SecretStr, bool]:
    """The secret at ``path``, generated first if there is none; and whether it was generated.

    Generated secrets are 32 random bytes, URL-safe base64 (43 characters), so
    they can be passed in headers, URLs and environment variables unquoted.
    Two starts racing both end up with the one that reached the disk first.

    Raises:
        SecretFileError: the existing file is unsafe or unreadable.
    """
    created = _write_new(path, secrets.token_urlsafe(32))
    value = read_secret(path)
    if value is None:  # removed between the two calls
        msg = f"the secret file {path} disappeared while it was being created"
        raise SecretFileError(msg)
    return value, created


def replace_secret(path: Path, value: SecretStr) -> None:
    """Store ``value`` at ``path`` (mode 0600) in place of what is there (a rotation).

    Written to a new file first and renamed over the old one, so a reader sees
    the old secret or the new one, never a partial file.
    """
    os.replace(_write_temporary(path, value.get_secret_value()), path)


def new_password() -> SecretStr:
    """A fresh random password, as :func:`ensure_secret` generates them."""
    return SecretStr(secrets.token_urlsafe(32))
