"""BENCHMARKS.md from the sections' JSON: pure, so it is tested without running anything.

A section is what one bench script wrote (see ``_common``), or why there is
none: the script failed (its error tail is shown), does not exist yet, or was
not run this time and has no earlier result. Hand-written text survives
regeneration in preserved blocks::

    <!-- preserved: stream -->
    ...any markdown...
    <!-- /preserved: stream -->

A block named after a section is printed at the end of that section; any
other block goes, under its own headings, to "Other measurements".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "missing", "not run"]

_BLOCK = re.compile(
    r"<!-- preserved: (?P<name>[\w.-]+) -->\n(?P<body>.*?)\n?<!-- /preserved: (?P=name) -->",
    re.DOTALL,
)


@dataclass(frozen=True)
class Machine:
    """Where and when the run happened."""

    cpu: str
    cores: int
    ram_gib: float
    python: str
    kernel: str
    date: str
    commit: str
    load: str


@dataclass(frozen=True)
class Section:
    """One bench script's outcome in this run (or an earlier one)."""

    name: str
    title: str
    status: Status
    command: str
    data: Mapping[str, Any] | None = None
    """The script's JSON (the contract) when status is ok."""
    error: str = ""
    """Why it failed, and the tail of its output."""
    seconds: float | None = None
    date: str = ""
    """When it ran, when that was not this run."""
    quick: bool = False
    extra: list[str] = field(default_factory=list)


def preserved_blocks(text: str) -> dict[str, str]:
    """The preserved blocks of an earlier BENCHMARKS.md, by name, in order."""
    return {m["name"]: m["body"].strip("\n") for m in _BLOCK.finditer(text)}


def fmt_value(value: float | None, unit: str) -> str:
    """A figure's value with its unit, rounded for reading."""
    if value is None or math.isnan(value):
        return "n/a"
    size = abs(value)
    if value == int(value) and unit not in ("x", "%") and size < 1e15:
        text = f"{int(value):,}"  # a count, or a whole number of units
    elif size >= 100:
        text = f"{value:,.0f}"
    elif size >= 10:
        text = f"{value:.1f}"
    elif size >= 1 or size == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    if unit == "x":
        return f"{text}x"
    if unit == "%":
        return f"{text}%"
    return f"{text} {unit}" if unit else text


def _met(figure: Mapping[str, Any]) -> str:
    met = figure.get("met")
    if figure.get("goal") is None or met is None:
        return ""
    return "**met**" if met else "**not met**"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def goals(section: Section) -> tuple[int, int]:
    """(goals met, goals) of a section that ran."""
    if section.data is None:
        return 0, 0
    judged = [f for f in section.data["figures"] if f.get("goal") and f.get("met") is not None]
    return sum(bool(f["met"]) for f in judged), len(judged)


def _summary_row(section: Section) -> str:
    met, total = goals(section)
    if section.status == "ok":
        status = "ran" + (f", from {section.date}" if section.date else "")
        score = f"{met} of {total}" if total else "no goals"
    else:
        status, score = f"**{section.status}**", ""
    took = f"{section.seconds:.0f} s" if section.seconds is not None else ""
    return f"| [{section.title}](#{_anchor(section.title)}) | {status} | {score} | {took} |"


def _anchor(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip()
    return re.sub(r" ", "-", slug)


def render_section(section: Section, preserved: Mapping[str, str]) -> list[str]:
    """The markdown lines of one section."""
    out = [f"## {section.title}", ""]
    out.append(f"Run alone: `{section.command}`")
    if section.date:
        out.append(f"(not re-run this time: figures from the run of {section.date})")
    if section.quick:
        out.append("(quick smoke run: not representative)")
    out.append("")
    if section.status == "ok" and section.data is not None:
        out += ["| figure | value | goal | met | detail |", "| --- | --- | --- | --- | --- |"]
        for fig in section.data["figures"]:
            out.append(
                "| "
                + " | ".join(
                    _cell(c)
                    for c in (
                        fig["name"],
                        fmt_value(fig.get("value"), fig.get("unit", "")),
                        fig.get("goal") or "",
                        _met(fig),
                        fig.get("detail", ""),
                    )
                )
                + " |"
            )
        out.append("")
        for note in section.data.get("notes", []):
            out += [note, ""]
    elif section.status == "failed":
        out += [
            "**Failed**, no figures this run:",
            "",
            "```text",
            section.error.rstrip(),
            "```",
            "",
        ]
    elif section.status == "missing":
        out += [f"**Missing**: {section.error}", ""]
    else:
        out += ["**Not run** (and no earlier result to show).", ""]
    out += [*section.extra]
    if section.name in preserved:
        out += [preserved_block(section.name, preserved[section.name]), ""]
    return out


def preserved_block(name: str, body: str) -> str:
    """A preserved block as it is written back."""
    return f"<!-- preserved: {name} -->\n{body}\n<!-- /preserved: {name} -->"


def render(
    sections: Sequence[Section],
    machine: Machine,
    preserved: Mapping[str, str],
    *,
    command: str,
    quick: bool = False,
) -> str:
    """The whole BENCHMARKS.md."""
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by bench/run.py. Edit text only inside preserved blocks;"
        " everything else is regenerated. -->",
        "",
        f"Generated by `{command}` on {machine.date}, commit {machine.commit}.",
        "",
        f"Machine: {machine.cpu}, {machine.cores} cores, {machine.ram_gib:.1f} GiB RAM, "
        f"Python {machine.python}, Linux {machine.kernel}; load average {machine.load}.",
        "",
    ]
    if quick:
        lines += ["**Quick smoke run**: short workloads, the figures are not representative.", ""]
    lines += [
        "Each section comes from one script under `bench/`; ratios in a section are "
        "measured side by side in the same run, so read them before the absolute "
        "figures, which move with the load of this shared machine. Beside each "
        "figure with a goal: met or not met. A failed script shows its error instead.",
        "",
        "| section | status | goals met | time |",
        "| --- | --- | --- | --- |",
        *(_summary_row(s) for s in sections),
        "",
    ]
    for section in sections:
        lines += render_section(section, preserved)
    names = {s.name for s in sections}
    others = [(n, b) for n, b in preserved.items() if n not in names]
    if others:
        lines += ["## Other measurements (hand-written, not regenerated)", ""]
        for name, body in others:
            lines += [preserved_block(name, body), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
