"""The fleet as its acks tell it: pure, from acks, publications and a clock.

A node's row says which version it last applied and when, its last refusal,
and where it stands against the production version of its policy: the
newest version on the control topic (every ``ThresholdUpdate`` there
counts, signed or not, as for the publisher: it is what nodes were sent).

Rules, in order:

- A node's policy is that of its latest applied ack, else of its latest refusal.
- ``current``: it applied the production version (or a newer one).
- ``behind``: it applied an older version, or none in the window but it refused
  the production version. It is behind since the earliest publication, still on
  the control topic, of a version above the one it applied (since the
  production version's when it applied none in the window).
- ``overdue``: behind for longer than ``max_behind``; any overdue node fails the check.
- ``unknown``: no published version of its policy, or no applied version in the
  window and no refusal of the production one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas import PolicyAck

State = Literal["current", "behind", "overdue", "unknown"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``5m``, ``1h``, ``2d`` as a timedelta.

    Raises:
        ValueError: if ``text`` is not a number with an optional unit s, m, h or d.
    """
    match = _DURATION.match(text)
    if match is None:
        msg = f"expected a duration such as 90s, 5m, 1h or 2d, got {text!r}"
        raise ValueError(msg)
    return timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])


@dataclass(frozen=True)
class Publication:
    """One ``ThresholdUpdate`` on the control topic."""

    policy_name: str
    version: int
    published_at: datetime


@dataclass(frozen=True)
class FleetRow:
    """One node, as its acks in the window show it."""

    node_id: str
    policy_name: str
    version: int | None
    """The version of its latest applied ack (None: no applied ack in the window)."""
    applied_at: datetime | None
    """When it started serving ``version``."""
    production: int | None
    """The newest published version of its policy (None: none on the control topic)."""
    state: State
    behind_since: datetime | None
    last_seen: datetime
    """Its latest ack, applied or refused."""
    refused_version: int | None = None
    refused_policy: str | None = None
    refused_at: datetime | None = None
    refusal: str | None = None
    """The reason of its latest refusal."""

    def behind_for(self, now: datetime) -> timedelta | None:
        """How long it has been behind at ``now`` (None when it is not)."""
        if self.behind_since is None:
            return None
        return max(timedelta(0), now - self.behind_since)

    def to_json(self, now: datetime) -> dict[str, object]:
        """The row as a JSON object (timestamps in ISO 8601, durations in seconds)."""
        behind = self.behind_for(now)
        return {
            "node_id": self.node_id,
            "policy_name": self.policy_name,
            "version": self.version,
            "applied_at": _iso(self.applied_at),
            "production": self.production,
            "state": self.state,
            "behind_since": _iso(self.behind_since),
            "behind_s": None if behind is None else round(behind.total_seconds(), 3),
            "last_seen": _iso(self.last_seen),
            "refused_version": self.refused_version,
            "refused_policy": self.refused_policy,
            "refused_at": _iso(self.refused_at),
            "refusal": self.refusal,
        }


@dataclass(frozen=True)
class FleetView:
    """Every node seen in the window, the production versions and the verdict."""

    rows: tuple[FleetRow, ...]
    production: Mapping[str, int]
    """Newest published version per policy name."""

    @property
    def overdue(self) -> tuple[str, ...]:
        """Nodes behind for longer than allowed."""
        return tuple(r.node_id for r in self.rows if r.state == "overdue")

    @property
    def ok(self) -> bool:
        """No node is overdue."""
        return not self.overdue


def fleet_view(
    acks: Iterable[PolicyAck],
    published: Iterable[Publication],
    now: datetime,
    *,
    max_behind: timedelta,
    since: datetime | None = None,
) -> FleetView:
    """One row per node with an ack at or after ``since``, sorted by node id."""
    history: dict[str, list[Publication]] = {}
    for p in published:
        history.setdefault(p.policy_name, []).append(p)
    production = {name: max(p.version for p in ps) for name, ps in history.items()}
    by_node: dict[str, list[PolicyAck]] = {}
    for ack in acks:
        if since is None or ack.ts >= since:
            by_node.setdefault(ack.node_id, []).append(ack)
    rows = (
        _row(node_acks, production, history, now, max_behind)
        for _, node_acks in sorted(by_node.items())
    )
    return FleetView(rows=tuple(rows), production=production)


def _row(
    acks: list[PolicyAck],
    production: Mapping[str, int],
    history: Mapping[str, list[Publication]],
    now: datetime,
    max_behind: timedelta,
) -> FleetRow:
    # Latest first by send time; equal times by version, so a replay never hides a newer one.
    acks = sorted(acks, key=lambda a: (a.ts, a.version), reverse=True)
    applied = next((a for a in acks if a.status == "applied"), None)
    refused = next((a for a in acks if a.status == "refused"), None)
    anchor = applied or acks[0]  # with no applied ack, every ack is a refusal
    policy = anchor.policy_name
    latest = production.get(policy)
    since = _behind_since(applied, refused, latest, history.get(policy, []))
    state: State
    if latest is None or (applied is None and since is None):
        state = "unknown"
    elif since is None:
        state = "current"
    else:
        state = "overdue" if now - since > max_behind else "behind"
    return FleetRow(
        node_id=anchor.node_id,
        policy_name=policy,
        version=applied.version if applied else None,
        applied_at=applied.applied_at if applied else None,
        production=latest,
        state=state,
        behind_since=since,
        last_seen=acks[0].ts,
        refused_version=refused.version if refused else None,
        refused_policy=refused.policy_name if refused else None,
        refused_at=refused.ts if refused else None,
        refusal=refused.reason if refused else None,
    )


def _behind_since(
    applied: PolicyAck | None,
    refused: PolicyAck | None,
    latest: int | None,
    history: list[Publication],
) -> datetime | None:
    if latest is None:
        return None
    if applied is not None:
        newer = [p.published_at for p in history if p.version > applied.version]
        return min(newer) if newer else None
    if refused is not None and refused.version >= latest:
        return min(p.published_at for p in history if p.version == latest)
    return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
