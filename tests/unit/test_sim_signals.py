"""Labels and feedback: faults as configured, contracts respected, correlated with truth."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.node.controller import Controller
from pipeline.node.snapshot import compile_snapshot
from pipeline.sim import (
    FeedbackConfig,
    LabelConfig,
    Outbox,
    Served,
    SimClock,
    delivery_order,
    feedback_for,
    labels_for,
    scenario,
    simulate,
)
from pipeline.sim.answers import normalize
from schemas import EMLabel, PolicyBody, SegmentPolicy, UserFeedback

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def served() -> list[Served]:
    policy = SegmentPolicy(thresholds={"normal": 0.8}, min_tokens=16, token_budget=512)
    body = PolicyBody(segments={"global": policy}, exploration_share=0.05)
    snap = compile_snapshot(body, policy_name="default", version=1, source="broker")
    return list(simulate(scenario(), 11, [Controller(snap)], 3000, SimClock(START, 10.0)))


def _labels(served: list[Served], config: LabelConfig, seed: int = 0) -> list:
    return [item for s in served for item in labels_for(s, config, seed)]


def test_without_loss_or_duplicates_every_request_gets_exactly_one_label(served) -> None:
    items = _labels(served, LabelConfig(loss=0.0, duplicate=0.0))
    per_request = Counter(item.message.request_id for item in items)
    assert set(per_request) == {s.event.request_id for s in served}
    assert set(per_request.values()) == {1}


def test_losses_and_duplicates_follow_their_rates(served) -> None:
    items = _labels(served, LabelConfig(loss=0.1, duplicate=0.2))
    per_request = Counter(item.message.request_id for item in items)
    lost = len(served) - len(per_request)
    assert lost / len(served) == pytest.approx(0.1, abs=0.03)
    doubled = [rid for rid, n in per_request.items() if n == 2]
    assert len(doubled) / len(per_request) == pytest.approx(0.2, abs=0.03)
    assert max(per_request.values()) == 2
    by_request: dict[str, list[EMLabel]] = {}
    for item in items:
        by_request.setdefault(item.message.request_id, []).append(item.message)
    for rid in doubled:
        first, second = by_request[rid]
        assert first.label_id == second.label_id
        assert first == second  # a producer retry: the very same label


def test_reordering_really_reorders(served) -> None:
    def order(config: LabelConfig) -> list[int]:
        delivered = delivery_order(_labels(served, config))
        return [int(item.message.request_id.rsplit("-", 1)[1]) for item in delivered]

    steady = order(LabelConfig(delay_mean_s=0.0, reorder=0.0, loss=0.0, duplicate=0.0))
    assert steady == sorted(steady)
    shuffled = order(LabelConfig(delay_mean_s=0.0, reorder=0.3, loss=0.0, duplicate=0.0))
    inversions = sum(a > b for a, b in zip(shuffled, shuffled[1:], strict=False))
    assert inversions > 50
    assert sorted(shuffled) == steady


def test_labels_come_late_with_aware_timestamps_and_valid_contracts(served) -> None:
    for item in _labels(served, LabelConfig(loss=0.0)):
        label = item.message
        assert EMLabel.from_bytes(label.to_bytes()) == label
        assert label.ts.tzinfo is not None
        assert item.deliver_at >= label.ts
    for s in served[:500]:
        for item in labels_for(s, LabelConfig(loss=0.0, duplicate=0.0), 0):
            assert item.message.ts >= s.event.ts + timedelta(seconds=2.0)


def test_aliases_need_normalisation_and_verdicts_judge_the_served_answer(served) -> None:
    config = LabelConfig(loss=0.0, duplicate=0.0, alias=0.5, verdict=0.2)
    aliased = verdicts = 0
    for s in served:
        (item,) = labels_for(s, config, 3)
        label = item.message
        if label.verdict is not None:
            verdicts += 1
            assert label.verdict == s.correct
            continue
        assert label.gold_answers is not None
        assert all(normalize(g) == normalize(s.request.gold) for g in label.gold_answers)
        aliased += any(g != s.request.gold for g in label.gold_answers)
    assert verdicts / len(served) == pytest.approx(0.2, abs=0.04)
    assert aliased > 0.3 * (len(served) - verdicts)


def test_feedback_is_negative_more_often_when_the_served_answer_is_wrong(served) -> None:
    config = FeedbackConfig(rate=1.0)
    ratings: dict[bool, list[int]] = {True: [], False: []}
    kinds: Counter[str] = Counter()
    for s in served:
        (item,) = feedback_for(s, config, 5)
        fb = item.message
        assert UserFeedback.from_bytes(fb.to_bytes()) == fb
        assert fb.ts > s.event.ts and fb.ts.tzinfo is not None
        ratings[s.correct].append(fb.rating)
        kinds[fb.kind] += 1
        if fb.kind == "correction":
            assert not s.correct and fb.correction == s.request.gold
    negative = {ok: statistics.mean(r == -1 for r in rs) for ok, rs in ratings.items()}
    assert negative[False] > negative[True] + 0.3
    assert set(kinds) == {"thumbs", "regenerate", "correction"}


def test_feedback_rate_and_determinism(served) -> None:
    config = FeedbackConfig(rate=0.1)
    first = [item for s in served for item in feedback_for(s, config, 8)]
    again = [item for s in served for item in feedback_for(s, config, 8)]
    assert first == again
    assert len(first) / len(served) == pytest.approx(0.1, abs=0.03)


def test_outbox_releases_messages_when_due_in_delivery_order(served) -> None:
    box: Outbox[EMLabel] = Outbox()
    items = _labels(served[:200], LabelConfig(loss=0.0))
    box.add(items)
    assert len(box) == len(items)
    cut = START + timedelta(seconds=10)
    early = box.due(cut)
    assert all(item.deliver_at <= cut for item in early)
    assert [i.deliver_at for i in early] == sorted(i.deliver_at for i in early)
    rest = box.due(START + timedelta(days=1))
    assert len(early) + len(rest) == len(items) and len(box) == 0
