"""Stop a stack when the process that owns it is gone, however it ended.

A test session or a benchmark starts a private stack and stops it when it
finishes; killed (SIGKILL, a segfault in a native library, a CI timeout) it
never gets to, and the JVM and servers it started live on in sessions of
their own. :func:`tether` starts this module beside such an owner: it polls
the owner's pid (and start time, so a recycled pid does not fool it) and,
once the owner is gone, stops every service recorded in the stack's process
table, newest first, exactly as ``pipeline down`` would. ``pipeline up``
does not use it: that stack is meant to outlive the command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.stack.process import SERVICES, ProcessTable, start_ticks


def tether(run_dir: Path, owner: int | None = None, poll_s: float = 1.0) -> subprocess.Popen[bytes]:
    """Start a reaper of the stack recorded in ``run_dir`` for ``owner`` (default: this process).

    Stop it (``terminate``) once the owner has stopped the stack itself.
    """
    pid = os.getpid() if owner is None else owner
    ticks = start_ticks(pid)
    argv = [sys.executable, "-m", "pipeline.stack.reaper", str(pid), str(ticks), str(run_dir)]
    return subprocess.Popen(  # noqa: S603  # our own interpreter and module
        [*argv, "--poll-s", str(poll_s)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives the owner's process group being killed
    )


def reap_when_gone(owner: int, ticks: int | None, run_dir: Path, poll_s: float) -> list[str]:
    """Wait until ``owner`` has exited, then stop the recorded services; their names."""
    while start_ticks(owner) == ticks and ticks is not None:
        time.sleep(poll_s)
    table = ProcessTable(run_dir)
    return [name for name in reversed(SERVICES) if table.stop(name)]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.stack.reaper OWNER TICKS RUN_DIR``: what :func:`tether` starts."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.stack.reaper")
    parser.add_argument("owner", type=int)
    parser.add_argument("ticks", help="the owner's start time in clock ticks ('None': gone)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    ticks = None if args.ticks == "None" else int(args.ticks)
    reap_when_gone(args.owner, ticks, args.run_dir, args.poll_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
