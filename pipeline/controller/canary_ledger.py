"""The canary's pairs, formed once: closed intervals of request time, appended in order.

The guardrail tests (:mod:`pipeline.optimizer.sequential`) are always valid
only if the sequence of pair differences they bet on grows at its end and
never changes. Pairing the whole window again at every check breaks that:
a label arriving late turns an unlabeled request into a labeled one and
shifts every EM pair after it, so the test bets again on a re-drawn sequence
(an outside simulation measured false rollbacks of 0.07-0.08 at alpha 0.05
that way; ``tests/unit/test_canary_ledger.py`` measures both ways here).

So the monitor pairs each interval of request time once, when it closes:
requests made in ``(watermark, now - label_wait]`` are paired by arrival
order within each segment and minute, with the labels and feedback they have
by then, and the pairs are appended to the ledger; the watermark moves to
the interval's end. A label that arrives after its interval closed is never
used by the guardrails (the request counts as unlabeled), which keeps which
requests pair independent of their outcomes as long as label delay is.

The ledger lives beside the certificates, under
``<state_dir>/controller/<policy>/canary.json``; one for the canary running
now (a new carrier or candidate starts a new ledger). Losing it restarts the
pairing from the carrier's start: the tests then look at the same data a
second time, which the log reports as an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.controller.certificates import write_json_atomically
from pipeline.controller.reader import Paired

log = logging.getLogger(__name__)

Series = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class CanaryLedger:
    """Every pair formed so far for one canary, and the request time they reach."""

    carrier: int
    """Production version carrying the canary."""
    candidate: int
    """The candidate version on the canary arm."""
    watermark: datetime
    """Requests made up to this instant have been paired (or left unpaired) for good."""
    pairs: Paired

    @classmethod
    def start(cls, carrier: int, candidate: int, since: datetime) -> CanaryLedger:
        """An empty ledger whose first interval opens at ``since``."""
        empty: Series = ((), ())
        return cls(carrier, candidate, since, Paired(empty, empty, empty))

    def extend(self, new: Paired, until: datetime) -> CanaryLedger:
        """The ledger with the pairs of the interval ``(watermark, until]`` appended."""
        if until <= self.watermark:
            return self

        def join(old: Series, more: Series) -> Series:
            return (old[0] + more[0], old[1] + more[1])

        pairs = Paired(
            em=join(self.pairs.em, new.em),
            tokens=join(self.pairs.tokens, new.tokens),
            negative_feedback=join(self.pairs.negative_feedback, new.negative_feedback),
        )
        return CanaryLedger(self.carrier, self.candidate, until, pairs)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        p = self.pairs
        return {
            "carrier": self.carrier,
            "candidate": self.candidate,
            "watermark": self.watermark.isoformat(),
            "em": [list(p.em[0]), list(p.em[1])],
            "tokens": [list(p.tokens[0]), list(p.tokens[1])],
            "negative_feedback": [list(p.negative_feedback[0]), list(p.negative_feedback[1])],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CanaryLedger:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError, KeyError, TypeError: the data is not a ledger.
        """

        def series(name: str) -> Series:
            canary, production = data[name]
            if len(canary) != len(production):
                msg = f"{name}: arms of unequal length"
                raise ValueError(msg)
            return tuple(map(float, canary)), tuple(map(float, production))

        return cls(
            carrier=int(data["carrier"]),
            candidate=int(data["candidate"]),
            watermark=datetime.fromisoformat(str(data["watermark"])),
            pairs=Paired(series("em"), series("tokens"), series("negative_feedback")),
        )


def ledger_path(state_dir: Path, policy_name: str) -> Path:
    """Where the running canary's pairs of ``policy_name`` are kept."""
    return state_dir / "controller" / policy_name / "canary.json"


def load_ledger(path: Path, carrier: int, candidate: int, since: datetime) -> CanaryLedger:
    """The saved ledger of this canary; a new one for another canary, none or an unreadable file."""
    fresh = CanaryLedger.start(carrier, candidate, since)
    if not path.exists():
        return fresh
    try:
        saved = CanaryLedger.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("canary pairs at %s unreadable (%s): pairing restarts", path, exc)
        return fresh
    if (saved.carrier, saved.candidate) != (carrier, candidate):
        return fresh  # another canary's pairs
    return saved


def save_ledger(path: Path, ledger: CanaryLedger) -> None:
    """Write ``ledger`` atomically (a reader sees the old file or the new one)."""
    write_json_atomically(path, ledger.to_json())
