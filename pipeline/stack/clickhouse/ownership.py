"""Explicit ownership of the chdb data path: an flock-held lock file with the owner's pid.

chdb lets one process open a data path; a second one fails deep inside the
engine with "Error initializing EmbeddedServer". Taking an exclusive ``flock``
on ``<state>/clickhouse.lock`` before opening the engine turns that into an
immediate, named refusal, and the kernel drops the lock when the owner dies,
so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pipeline.stack.clickhouse.errors import WarehouseOwnedError


def lock_path(data_path: Path) -> Path:
    """The lock file guarding a chdb data path: a sibling named ``<name>.lock``."""
    return data_path.with_name(data_path.name + ".lock")


def owner_pid(path: Path) -> int | None:
    """The pid written in a lock file, or None when it is empty or unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class PathLock:
    """An exclusive, non-blocking claim on a chdb data path for this process's lifetime."""

    def __init__(self, data_path: Path) -> None:
        self.data_path = data_path
        self.path = lock_path(data_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid.

        Raises:
            WarehouseOwnedError: another process holds it; the message names its pid.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = owner_pid(self.path)
            who = f"pid {pid}" if pid else "another process"
            msg = (
                f"the chdb path {self.data_path} is already open in another process ({who}, "
                f"lock {self.path}): stop it, or use another PIPELINE_STATE_DIR"
            )
            raise WarehouseOwnedError(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # before unlocking, so we never erase a successor's pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> PathLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
