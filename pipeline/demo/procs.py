"""The demo's child processes: started with their own logs, always stopped.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only
the demo, which then stops the children itself: SIGTERM to the child's
process group, a bounded wait, then SIGKILL. :class:`Children` is a context
manager, so an error or an interrupt anywhere in the demo still stops them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from pipeline.errors import PipelineError


class DemoError(PipelineError):
    """The demo could not run (a child died, a service is missing)."""


@dataclass
class Child:
    """One started child process."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while it runs."""
        return self.proc.poll() is None


class Children:
    """Starts ``python -m pipeline.cli ...`` children and stops every one of them."""

    def __init__(self, env: dict[str, str], log_dir: Path, stop_timeout_s: float = 40.0) -> None:
        self._env = env
        self._log_dir = log_dir
        self._timeout = stop_timeout_s
        self.started: list[Child] = []
        self.exit_codes: dict[str, int | None] = {}

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Child:
        """Start ``pipeline <args>`` with its output in ``<log_dir>/<name>.log``."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_dir / f"{name}.log"
        handle = log.open("ab")
        proc = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            [sys.executable, "-m", "pipeline.cli", *args],
            env={**self._env, **(extra_env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child = Child(name, proc, log, handle)
        self.started.append(child)
        return child

    def check(self) -> None:
        """Raise :class:`DemoError` when a child has exited on its own."""
        for child in self.started:
            code = child.proc.poll()
            if code is not None:
                msg = f"{child.name} exited with code {code}; see {child.log}:\n{tail(child.log)}"
                raise DemoError(msg)

    def stop_all(self) -> None:
        """SIGTERM every child (newest first), wait, SIGKILL what is left.

        A second Ctrl-C during the wait skips to SIGKILL: no child outlives this.
        """
        try:
            for child in reversed(self.started):
                _signal(child, signal.SIGTERM)
            deadline = time.monotonic() + self._timeout
            for child in reversed(self.started):
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal(child, signal.SIGKILL)
        finally:
            for child in self.started:
                if child.proc.poll() is None:
                    _signal(child, signal.SIGKILL)
                    child.proc.wait(10)
                self.exit_codes[child.name] = child.proc.returncode
                child.handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal(child: Child, sig: signal.Signals) -> None:
    if child.proc.poll() is not None:
        return
    try:
        os.killpg(child.proc.pid, sig)  # the child leads its own session and group
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
