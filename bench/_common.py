"""What every bench script shares: the JSON contract, its printout, timing helpers,
free ports and a private stack.

Each ``bench/bench_*.py`` accepts ``--json PATH`` and writes there, besides its
printout::

    {"section": str, "command": str,
     "figures": [{"name", "value", "unit", "goal", "met", "detail"}], "notes": [str]}

``bench/run.py`` runs every script with ``--json`` and renders BENCHMARKS.md
from these files. Scripts are run as ``python bench/bench_x.py``, so this
module is imported as ``_common`` (the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Settings


@dataclass(frozen=True)
class Figure:
    """One measured figure, with its goal and whether it was met (None: no goal)."""

    name: str
    value: float
    unit: str
    goal: str | None = None
    met: bool | None = None
    detail: str = ""


@dataclass
class Report:
    """A section of BENCHMARKS.md, as one script measured it."""

    section: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        goal: str | None = None,
        met: bool | None = None,
        detail: str = "",
    ) -> Figure:
        """Append a figure (NaN for a value that could not be measured) and return it."""
        figure = Figure(name, float(value), unit, goal, met, detail)
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        """The contract's JSON object (NaN becomes null: JSON has no NaN)."""
        figures = []
        for fig in self.figures:
            row = asdict(fig)
            if math.isnan(fig.value) or math.isinf(fig.value):
                row["value"] = None
            figures.append(row)
        return {
            "section": self.section,
            "command": self.command,
            "figures": figures,
            "notes": list(self.notes),
        }

    def write(self, path: Path | None) -> None:
        """Write the JSON to ``path`` (nothing when None)."""
        if path is not None:
            path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def verdict(fig: Figure) -> str:
    """What a printout adds to a figure with a goal (nothing without one)."""
    if not fig.goal:
        return ""
    if fig.met is None:
        return f"  [goal {fig.goal}]"
    return f"  [goal {fig.goal}: {'met' if fig.met else 'NOT met'}]"


def print_figures(report: Report, *, name: int, value: str, unit: int) -> None:
    """Print the figures as a table: ``name`` and ``unit`` are widths, ``value`` a format."""
    for fig in report.figures:
        print(f"{fig.name:{name}} {fig.value:{value}} {fig.unit:{unit}} {fig.detail}{verdict(fig)}")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """The contract's ``--json PATH`` option."""
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write figures as JSON here"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rate(count: Callable[[], float], total: float, timeout_s: float) -> float | None:
    """Units/s from the first units counted to ``total``; None on timeout.

    Counters move a batch at a time, so the first batch only starts the clock.
    """
    deadline = time.monotonic() + timeout_s
    while (first := count()) == 0:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.001)
    start = time.perf_counter()
    while count() < total:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)
    return (total - first) / (time.perf_counter() - start)


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def stack(choice: str, *, kafka_heap: str = "512m") -> Iterator[Settings]:
    """Settings of a running stack: a private embedded one on free ports, or ``PIPELINE_*``.

    ``embedded`` starts Kafka, the warehouse and MLflow in a temporary state
    folder (like the tests' ``stack`` fixture) and stops them afterwards;
    ``env`` uses whatever the environment points at. Either way the topic
    prefix is a fresh uuid and the topics are created, so runs never share data.
    """
    from pipeline.config import load_settings
    from pipeline.stack.topics import ensure_topics

    prefix = f"bench{uuid.uuid4().hex[:10]}."
    if choice == "env":
        base = load_settings()
        settings = base.model_copy(
            update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})}
        )
        ensure_topics(settings)
        yield settings
        return
    if choice != "embedded":
        msg = f"unknown stack {choice!r}: embedded or env"
        raise ValueError(msg)
    from pipeline.stack import manager

    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        settings = load_settings(
            state_dir=Path(tmp),
            kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "topic_prefix": prefix},
            clickhouse={"url": f"http://127.0.0.1:{free_port()}"},
            mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"},
            embedded={"kafka_controller_port": free_port(), "kafka_heap": kafka_heap},
        )
        with manager.tethered(settings):  # stops the stack if the benchmark is killed
            try:
                manager.up(settings)
                ensure_topics(settings)
                yield settings
            finally:
                manager.down(settings)
