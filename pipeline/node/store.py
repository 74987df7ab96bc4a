"""The last good policy on local disk, for restarts without a broker.

The file holds the update's wire bytes exactly as received, so it is verified
again (schema, checksum, signature, bounds) when read: a file that was
tampered with, or signed by a key since retired, is not trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class PolicyStore:
    """One file per policy name under ``directory``."""

    def __init__(self, directory: Path, policy_name: str) -> None:
        self._dir = directory
        self._path = directory / f"{policy_name}.last-good.json"

    @property
    def path(self) -> Path:
        """Where the last good update is kept."""
        return self._path

    def save(self, raw: bytes) -> None:
        """Replace the stored update atomically: a crash leaves the old file or the new one.

        Raises:
            OSError: if the folder cannot be created or written.
        """
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{self._path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(raw)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()

    def load(self) -> bytes | None:
        """The stored update's bytes, or None when there is none (or it cannot be read)."""
        try:
            return self._path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the last good policy %s: %s", self._path, exc)
            return None

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable; not every platform allows it.
        try:
            fd = os.open(self._dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
