"""Background processes of the embedded stack, tracked by pid files.

A pid file records the pid, the process start time (from /proc) and the
command line, so `pipeline down` only ever signals a process this stack
started: a recycled pid belongs to a process with another start time and is
left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PortInUseError, StackError

SERVICES = ("kafka", "clickhouse", "mlflow")
"""The embedded stack's services, in start order; stopped in reverse."""


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds."""

    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: str


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (host, port) or the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers but still fails on a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def require_free_port(service: str, host: str, port: int, setting: str) -> None:
    """Raise :class:`PortInUseError` naming the setting that chooses the port."""
    if port_in_use(host, port):
        msg = (
            f"{service} cannot start: {host}:{port} is already in use by another process "
            f"(stop it, or choose another port with {setting})"
        )
        raise PortInUseError(msg)


class ProcessTable:
    """The pid files of one state folder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def read(self, name: str) -> PidRecord | None:
        """The record of a service, or None when there is no pid file."""
        path = self._path(name)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return PidRecord(
            name=name,
            pid=int(raw["pid"]),
            start_ticks=int(raw["start_ticks"]),
            argv=tuple(raw["argv"]),
            log=str(raw["log"]),
        )

    def alive(self, name: str) -> PidRecord | None:
        """The record when its process is still the one we started, else None."""
        record = self.read(name)
        if record is None:
            return None
        if start_ticks(record.pid) != record.start_ticks:
            return None
        return record

    def spawn(
        self, name: str, argv: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
    ) -> PidRecord:
        """Start ``argv`` in its own session, output to ``log``, and record it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603  # argv is built by the stack, not user input
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        ticks = start_ticks(proc.pid)
        if ticks is None:
            msg = f"{name} exited at once; see {log}"
            raise StackError(msg)
        record = PidRecord(name, proc.pid, ticks, tuple(argv), str(log))
        self._path(name).write_text(
            json.dumps({"pid": proc.pid, "start_ticks": ticks, "argv": list(argv), "log": str(log)})
        )
        return record

    def stop(self, name: str, timeout_s: float = 30.0) -> bool:
        """Stop a recorded service (SIGTERM, then SIGKILL); True if one was running."""
        record = self.alive(name)
        if record is None:
            self._path(name).unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if start_ticks(record.pid) != record.start_ticks:
                break
            _reap(record.pid)
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
            _reap(record.pid)
        self._path(name).unlink(missing_ok=True)
        return True

    def exited(self, record: PidRecord) -> bool:
        """True when the recorded process has ended (reaping it if it is our child)."""
        _reap(record.pid)
        return start_ticks(record.pid) != record.start_ticks


def _reap(pid: int) -> None:
    # Only a child of this process can be reaped; others are reaped by init.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: str | Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
