"""Unlabeled exploration on the real warehouse: read through the disagreement bound, or skipped.

Outcomes are written straight into ClickHouse (what the sink writes) under a
uuid policy name; the controller's reader reads them back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.config import Settings
from pipeline.controller.reader import read_exploration, read_new_exploration
from pipeline.warehouse.client import connect as ch_connect
from schemas import Checkpoint, Outcome
from tests.integration._control import insert, outcome

pytestmark = [pytest.mark.integration]

KEY = "acme/qa/short"
ANSWERS = ("Lima", "Paris.", "the paris", "Paris")
"""Trial answers at the four checkpoints; the full answer is "Paris"."""


def unlabeled(policy: str, i: int, ts: datetime) -> Outcome:
    base = outcome(policy, i, ts=ts, exploration=True)
    trajectory = tuple(
        Checkpoint(tokens=40 * (j + 1), confidence=0.97, answer=a) for j, a in enumerate(ANSWERS)
    )
    event = base.event.model_copy(update={"trajectory": trajectory, "answer": "Paris"})
    data = base.model_dump() | {
        "event": event.model_dump(),
        "labeled": False,
        "em": None,
        "em_full": None,
        "checkpoint_em": None,
    }
    return Outcome.model_validate(data)


def test_unlabeled_exploration_is_read_through_the_disagreement_bound_or_skipped(
    isolated: Settings,
) -> None:
    policy = f"un{uuid.uuid4().hex[:10]}"
    made = datetime.now(UTC) - timedelta(minutes=5)
    labeled = [outcome(policy, i, ts=made, exploration=True) for i in range(30)]
    insert(isolated, labeled + [unlabeled(policy, i, made) for i in range(20)])
    after, until = made - timedelta(seconds=1), made + timedelta(seconds=1)
    client = ch_connect(isolated)
    try:
        skipped = read_new_exploration(client, policy, after, until)
        bounded = read_new_exploration(client, policy, after, until, unlabeled="disagreement")
        window = read_exploration(client, policy, after, unlabeled="disagreement", until=until)
    finally:
        client.close()
    assert len(skipped[KEY]) == 30
    for batch in (bounded[KEY], window[KEY]):
        assert len(batch) == 50
        flags = {tuple(row) for row in batch.correct.tolist()}
        # Labeled: every checkpoint right (em True). Unlabeled: right only where the
        # trial answer normalises to the full answer; the full answer counts as right.
        assert flags == {(True, True, True, True), (False, True, True, True)}
        assert bool(batch.full_correct.all())
    assert bounded[KEY].arrival is not None
