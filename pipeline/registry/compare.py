"""Differences between two policies, segment by segment (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from schemas import LoadMode, PolicyBody, SegmentPolicy

MODES: tuple[LoadMode, ...] = get_args(LoadMode)
ABSENT = "-"


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs: ``segment`` is ``"*"`` for policy-wide fields."""

    segment: str
    field: str
    before: str
    after: str
    delta: float | None = None
    """``after - before`` when both are numbers."""


def _fields(policy: SegmentPolicy | None) -> dict[str, float | str]:
    if policy is None:
        return {}
    out: dict[str, float | str] = {
        f"threshold.{mode}": policy.thresholds[mode] for mode in MODES if mode in policy.thresholds
    }
    out["min_tokens"] = policy.min_tokens
    out["token_budget"] = policy.token_budget
    if policy.schedule:
        out["schedule"] = " ".join(f"{start}:{t:g}" for start, t in policy.schedule)
    for mode, steps in sorted(policy.schedules.items()):
        out[f"schedule.{mode}"] = " ".join(f"{start}:{t:g}" for start, t in steps)
    if policy.exploration_share is not None:
        out["exploration_share"] = policy.exploration_share
    return out


def _show(value: float | str | None) -> str:
    if value is None:
        return ABSENT
    return f"{value:g}" if isinstance(value, float) else str(value)


def _change(segment: str, name: str, a: float | str | None, b: float | str | None) -> Change:
    delta = None
    if isinstance(a, int | float) and isinstance(b, int | float):
        delta = float(b) - float(a)
    return Change(segment, name, _show(a), _show(b), delta)


def diff_policies(a: PolicyBody, b: PolicyBody, *, everything: bool = False) -> list[Change]:
    """What changes from ``a`` to ``b``: per segment (sorted), then policy-wide fields.

    Args:
        a: The earlier policy.
        b: The later policy.
        everything: Also list fields that are equal (a full side-by-side table).
    """
    changes: list[Change] = []
    for segment in sorted(a.segments.keys() | b.segments.keys()):
        fa, fb = _fields(a.segments.get(segment)), _fields(b.segments.get(segment))
        for name in sorted(fa.keys() | fb.keys()):
            va, vb = fa.get(name), fb.get(name)
            if everything or va != vb:
                changes.append(_change(segment, name, va, vb))
    wide: dict[str, tuple[float | str | None, float | str | None]] = {
        "exploration_share": (a.exploration_share, b.exploration_share),
        "canary_share": (a.canary_share, b.canary_share),
        "candidate_version": (a.candidate_version, b.candidate_version),
    }
    for name, (va, vb) in wide.items():
        if everything or va != vb:
            changes.append(_change("*", name, va, vb))
    return changes
