"""Run every benchmark and rewrite BENCHMARKS.md.

    .venv/bin/python bench/run.py                      # everything (about half an hour)
    .venv/bin/python bench/run.py --quick              # a short smoke of everything
    .venv/bin/python bench/run.py --only node control  # some sections; the others keep
                                                       # their last results
    .venv/bin/python bench/run.py --out /tmp/B.md --results /tmp/r

Each script runs as a subprocess with ``--json`` and a timeout; its output is
shown as it goes. Every result (or failure) is kept as JSON under
``--results`` (``bench/results``, kept in git beside BENCHMARKS.md, by
default), so a section not selected by ``--only`` is shown from its last run,
with that run's date, in a fresh clone too. A script that
fails, times out or writes no valid JSON gets its section marked failed with
the tail of its output; the file is still written and the exit code is 1.
Goals not met are results, not failures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _render import Machine, Section, preserved_blocks, render

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TAIL_LINES = 30


@dataclass(frozen=True)
class Bench:
    """One script: its section name, arguments, and how long it may take."""

    name: str
    script: str
    title: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)
    timeout_s: float = 1800.0
    quick_timeout_s: float = 300.0
    takes_stack: bool = False

    def command(self, quick: bool, stack: str) -> list[str]:
        args = [*self.args]
        if self.takes_stack:
            args += ["--stack", stack]
        args += self.quick_args if quick else ()
        return [sys.executable, str(BENCH / self.script), *args]

    def alone(self, quick: bool, stack: str) -> str:
        shown = [".venv/bin/python", f"bench/{self.script}", *self.command(quick, stack)[2:]]
        return " ".join(shown)


BENCHES: tuple[Bench, ...] = (
    Bench("node", "bench_node.py", "Node SDK hot paths", timeout_s=600, quick_timeout_s=120),
    Bench(
        "control",
        "bench_control.py",
        "Control propagation: publish to ACK across nodes",
        timeout_s=900,
        quick_timeout_s=300,
        takes_stack=True,
    ),
    Bench(
        "quality",
        "bench_quality.py",
        "Decision quality against the oracle",
        timeout_s=3600,
        quick_timeout_s=300,
    ),
    Bench(
        "stream",
        "bench_stream.py",
        "Stream worker",
        quick_args=("--requests", "2000", "--repeat", "1"),
        timeout_s=2400,
        quick_timeout_s=600,
        takes_stack=True,
    ),
    Bench(
        "calibrate",
        "bench_calibrate.py",
        "Cold start: offline calibration on real trajectories",
        timeout_s=300,
        quick_timeout_s=120,
    ),
    Bench(
        "labels",
        "bench_labels.py",
        "Labels optional: certification with a share of exploration labeled",
        timeout_s=900,
        quick_timeout_s=300,
    ),
    Bench(
        "families",
        "bench_families.py",
        "Rule families: what each could add over one threshold (oracle)",
        timeout_s=1200,
        quick_timeout_s=400,
    ),
    Bench(
        "serve",
        "bench_serve.py",
        "Real node: generation with and without confidence probes",
        timeout_s=600,
        quick_timeout_s=120,
    ),
    Bench("soak", "bench_soak.py", "Soak", timeout_s=2400, quick_timeout_s=600),
    Bench(
        "warehouse",
        "bench_warehouse.py",
        "Embedded warehouse insert path",
        timeout_s=900,
        quick_timeout_s=300,
        takes_stack=True,
    ),
)


def machine() -> Machine:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 0,
        ram_gib=ram,
        python=platform.python_version(),
        kernel=platform.release(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
        load=f"{load} (1, 5, 15 min) at the end of the run",
    )


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}" + (" with uncommitted changes" if dirty else "")


def run_one(bench: Bench, quick: bool, stack: str, results: Path) -> Section:
    """Run one script with ``--json`` and turn what happened into a section."""
    title, alone = bench.title, bench.alone(quick, stack)
    if not (BENCH / bench.script).exists():
        return Section(
            bench.name, title, "missing", alone, error=f"bench/{bench.script} is not written yet."
        )
    out = results / f"{bench.name}.out.json"
    out.unlink(missing_ok=True)
    timeout = bench.quick_timeout_s if quick else bench.timeout_s
    cmd = [*bench.command(quick, stack), "--json", str(out)]
    print(f"\n=== {bench.name}: {' '.join(cmd[1:])} (timeout {timeout:.0f} s)", flush=True)
    start = time.monotonic()
    rc, tail, timed_out = _run(cmd, timeout, bench.name)
    took = time.monotonic() - start
    error = ""
    data: dict[str, Any] | None = None
    if timed_out:
        error = f"timed out after {timeout:.0f} s"
    elif rc != 0:
        error = f"exit code {rc}"
    else:
        try:
            data = _valid(json.loads(out.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            error = f"exit code 0 but no valid JSON at {out.name}: {exc}"
    if data is None:
        text = error + "\n\n" + "\n".join(tail)
        return Section(bench.name, title, "failed", alone, error=text, seconds=took, quick=quick)
    return Section(
        bench.name,
        data["section"] or title,
        "ok",
        data.get("command") or alone,
        data=data,
        seconds=took,
        quick=quick,
    )


def _valid(data: Any) -> dict[str, Any]:
    """The contract's object, or KeyError/TypeError/ValueError naming what is wrong."""
    if not isinstance(data, dict):
        msg = "not a JSON object"
        raise TypeError(msg)
    for key in ("section", "command", "figures", "notes"):
        if key not in data:
            raise KeyError(key)
    for fig in data["figures"]:
        for key in ("name", "value", "unit"):
            if key not in fig:
                msg = f"figure {fig.get('name')!r} has no {key}"
                raise KeyError(msg)
        if fig["value"] is not None:
            fig["value"] = float(fig["value"])
    if not all(isinstance(n, str) for n in data["notes"]):
        msg = "notes must be strings"
        raise ValueError(msg)
    return data


def _run(cmd: list[str], timeout: float, name: str) -> tuple[int, list[str], bool]:
    """Run ``cmd``, echoing its output; (exit code, last lines, timed out)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a timeout can end all of it
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            print(f"[{name}] {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        # SIGINT first: the script's finally blocks stop the stack it started.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)
    return proc.returncode, list(tail), timed_out


def _save(section: Section, results: Path) -> None:
    record = {
        "name": section.name,
        "title": section.title,
        "status": section.status,
        "command": section.command,
        "data": section.data,
        "error": section.error,
        "seconds": section.seconds,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": section.quick,
    }
    (results / f"{section.name}.json").write_text(json.dumps(record, indent=2) + "\n")


def _earlier(bench: Bench, quick: bool, stack: str, results: Path) -> Section:
    """The last saved result of a section not run this time."""
    try:
        rec = json.loads((results / f"{bench.name}.json").read_text())
        return Section(
            bench.name,
            rec["title"],
            rec["status"],
            rec["command"],
            data=rec["data"],
            error=rec["error"],
            seconds=rec["seconds"],
            date=rec["date"],
            quick=rec["quick"],
        )
    except (OSError, ValueError, KeyError):
        return Section(bench.name, bench.title, "not run", bench.alone(quick, stack))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    names = [b.name for b in BENCHES]
    parser.add_argument("--quick", action="store_true", help="short workloads: a smoke test")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=", ".join(names))
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--stack",
        choices=["embedded", "env"],
        default="embedded",
        help="for control, stream and warehouse",
    )
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    source = args.out if args.out.exists() else ROOT / "BENCHMARKS.md"
    preserved = preserved_blocks(source.read_text()) if source.exists() else {}

    selected = set(args.only or names)
    sections: list[Section] = []
    failed = []
    for bench in BENCHES:
        if bench.name not in selected:
            sections.append(_earlier(bench, args.quick, args.stack, args.results))
            continue
        section = run_one(bench, args.quick, args.stack, args.results)
        sections.append(section)
        if section.status != "missing":
            _save(section, args.results)
        if section.status == "failed" or (section.status == "missing" and args.only):
            failed.append(bench.name)
        print(f"=== {bench.name}: {section.status} in {section.seconds or 0:.0f} s", flush=True)

    shown = ["bench/run.py", *(argv if argv is not None else sys.argv[1:])]
    text = render(
        sections,
        machine(),
        preserved,
        command=".venv/bin/python " + " ".join(shown),
        quick=args.quick,
    )
    args.out.write_text(text)
    print(f"\nwrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
