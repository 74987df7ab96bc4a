"""The join state machine: order, duplication and expiry never change the final outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stream import join
from pipeline.stream.em import score
from pipeline.stream.processor import DictStore, InputRecord, Processor
from pipeline.stream.state import event_view, label_view
from schemas import EMLabel, InferenceEvent, Outcome, UserFeedback
from schemas.examples import EXAMPLE_TS, inference_event
from tests.unit.test_schemas_property import ZONES, ids, inference_events, stamps

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WINDOW_S = 600.0
Message = InferenceEvent | EMLabel | UserFeedback


def event(request_id: str, n: int = 0, *, answer: str = "Paris") -> InferenceEvent:
    return inference_event().model_copy(
        update={
            "request_id": request_id,
            "event_id": f"{request_id}-e{n}",
            "ts": EXAMPLE_TS + timedelta(seconds=n),
            "answer": answer,
        }
    )


def label(request_id: str, n: int = 0, *, gold: str = "Paris") -> EMLabel:
    return EMLabel(
        label_id=f"{request_id}-l{n}",
        request_id=request_id,
        labeler_id="annotator",
        ts=EXAMPLE_TS + timedelta(seconds=n),
        gold_answers=(gold,),
    )


def feedback(request_id: str, n: int, rating: int) -> UserFeedback:
    return UserFeedback(
        feedback_id=f"{request_id}-f{n}",
        request_id=request_id,
        ts=EXAMPLE_TS,
        kind="thumbs",
        rating=rating,
    )


def apply(state: join.JoinState | None, message: Message, now: datetime = NOW) -> join.Step:
    # Every state goes through bytes, as it would through a Faust table.
    if state is not None:
        state = join.JoinState.from_bytes(state.to_bytes())
    if isinstance(message, InferenceEvent):
        return join.on_event(state, event_view(message), shard=0, now=now)
    if isinstance(message, EMLabel):
        return join.on_label(state, label_view(message), shard=0, now=now)
    return join.on_feedback(state, message.feedback_id, message.rating, shard=0, now=now)


def outcome(result: join.Step | join.Expiry) -> Outcome | None:
    """The outcome a transition or an expiry emitted, read back with its contract."""
    record = result.outcome
    if record is None:
        return None
    parsed = Outcome.from_bytes(record.value)
    assert record.key == parsed.request_id.encode()
    return parsed


def run(messages: list[Message]) -> tuple[dict[str, Outcome], dict[str, str]]:
    """Apply in order, then expire everything; the last outcome and the end of each request."""
    states: dict[str, join.JoinState] = {}
    last: dict[str, Outcome] = {}
    for message in messages:
        step = apply(states.get(message.request_id), message)
        if step.changed:
            states[message.request_id] = step.state
        else:
            assert step.state == states[message.request_id]  # a no-op really is one
        if (emitted := outcome(step)) is not None:
            previous = last.get(message.request_id)
            assert previous is None or emitted.version > previous.version
            last[message.request_id] = emitted
    ends: dict[str, str] = {}
    later = NOW + timedelta(seconds=WINDOW_S)
    for request_id, state in states.items():
        expiry = join.expire(state, later, WINDOW_S)
        ends[request_id] = expiry.kind
        if (expired := outcome(expiry)) is not None:
            last[request_id] = expired
    # joined_at is when a row version was made: the one field allowed to differ.
    return {k: v.model_copy(update={"joined_at": NOW}) for k, v in last.items()}, ends


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Message], list[Message]]:
    """Distinct messages for a few requests, and a shuffled, duplicated delivery of them."""
    distinct: list[Message] = []
    for r in range(draw(st.integers(1, 4))):
        rid = f"req-{r}"
        for n in range(draw(st.integers(0, 2))):
            distinct.append(event(rid, n, answer=draw(st.sampled_from(["Paris", "Lyon"]))))
        for n in range(draw(st.integers(0, 2))):
            distinct.append(label(rid, n, gold=draw(st.sampled_from(["Paris", "Lyon"]))))
        for n in range(draw(st.integers(0, 3))):
            distinct.append(feedback(rid, n, draw(st.sampled_from([-1, 0, 1]))))
    copies = [m for m in distinct for _ in range(draw(st.integers(1, 3)))]
    return distinct, draw(st.permutations(copies))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_any_interleaving_or_duplication_gives_the_same_outcomes(
    scenario: tuple[list[Message], list[Message]],
) -> None:
    distinct, delivered = scenario
    assert run(delivered) == run(distinct)


def test_event_then_label_emits_a_labeled_outcome() -> None:
    first = apply(None, event("r"))
    assert (first.kind, first.outcome) == ("pending", None)
    second = apply(first.state, label("r"))
    got = outcome(second)
    assert second.kind == "emitted" and got is not None
    assert (got.labeled, got.em, got.version) == (True, True, 2)
    assert got.checkpoint_em == (False, True, True)


def test_label_first_then_event_emits_the_same() -> None:
    a = apply(apply(None, event("r")).state, label("r")).outcome
    b = apply(apply(None, label("r")).state, event("r")).outcome
    assert a == b


def test_feedback_before_and_after_updates_with_later_versions() -> None:
    step = apply(None, feedback("r", 0, -1))
    step = apply(step.state, event("r"))
    step = apply(step.state, label("r"))
    got = outcome(step)
    assert got is not None
    assert (got.version, got.feedback_count, got.negative_feedback) == (3, 1, 1)
    step = apply(step.state, feedback("r", 1, 1))
    got = outcome(step)
    assert got is not None
    assert (got.version, got.feedback_count, got.negative_feedback) == (4, 2, 1)


def test_duplicates_never_double_count() -> None:
    state = apply(apply(None, event("r")).state, label("r")).state
    for message in (event("r"), label("r")):
        step = apply(state, message)
        assert (step.kind, step.outcome, step.changed) == ("duplicate", None, False)
    once = apply(state, feedback("r", 0, -1))
    twice = apply(once.state, feedback("r", 0, -1))
    assert twice.kind == "duplicate" and twice.state.feedback == once.state.feedback


def test_a_later_label_wins_whatever_the_order() -> None:
    early, late = label("r", 0, gold="Lyon"), label("r", 5, gold="Paris")
    for order in ((early, late), (late, early)):
        step = apply(apply(apply(None, event("r")).state, order[0]).state, order[1])
        got = outcome(step)
        assert got is not None and got.em is True


def test_expiry_emits_unlabeled_outcomes_and_counts_orphans() -> None:
    later = NOW + timedelta(seconds=WINDOW_S)
    only_event = apply(apply(None, event("r")).state, feedback("r", 0, -1)).state
    assert join.expire(only_event, NOW + timedelta(seconds=WINDOW_S - 1), WINDOW_S).kind == "open"
    expiry = join.expire(only_event, later, WINDOW_S)
    got = outcome(expiry)
    assert expiry.kind == "unlabeled" and got is not None
    assert (got.labeled, got.em, got.version) == (False, None, 2)
    assert got.negative_feedback == 1
    assert join.expire(apply(None, label("r")).state, later, WINDOW_S).kind == "orphan_label"
    orphan = apply(None, feedback("r", 0, 1)).state
    assert join.expire(orphan, later, WINDOW_S).kind == "orphan_feedback"
    joined = apply(apply(None, event("r")).state, label("r")).state
    assert join.expire(joined, later, WINDOW_S) == join.Expiry("joined")


def test_the_window_starts_at_the_first_input() -> None:
    state = apply(None, label("r"), NOW).state
    state = apply(state, event("r"), NOW + timedelta(seconds=WINDOW_S - 1)).state
    assert state.first_seen == NOW.timestamp()


def test_inputs_per_request_are_bounded() -> None:
    state = apply(None, event("r")).state
    for n in range(join.MAX_INPUTS_PER_REQUEST - 1):
        state = apply(state, feedback("r", n, 1)).state
    step = apply(state, feedback("r", 10**6, 1))
    assert (step.kind, step.changed) == ("overflow", False)


@st.composite
def requests(draw: st.DrawFn) -> tuple[InferenceEvent, bytes, EMLabel | None, list[int], datetime]:
    """An event (its wire bytes canonical or not), maybe a label, feedback ratings, a clock."""
    ev: InferenceEvent = draw(inference_events())
    raw = ev.to_bytes()
    if draw(st.booleans()):  # another producer: spaces, key order, the ts in its own zone
        wire = json.loads(raw)
        wire["ts"] = ev.ts.astimezone(draw(st.sampled_from(ZONES))).isoformat()
        raw = json.dumps(dict(reversed(wire.items())), indent=1, ensure_ascii=True).encode()
    texts = st.text(max_size=20) | st.sampled_from(["Paris", "the Paris!", ev.answer])
    if ev.trajectory:
        texts |= st.sampled_from([point.answer for point in ev.trajectory])
    lab = None
    if draw(st.booleans()):
        golds = draw(st.none() | st.lists(texts, min_size=1, max_size=4))
        lab = EMLabel(
            label_id=draw(ids), request_id=ev.request_id, labeler_id="x", ts=draw(stamps),
            gold_answers=golds, verdict=draw(st.booleans()) if golds is None else None,
        )  # fmt: skip
    ratings = draw(st.lists(st.sampled_from([-1, 0, 1]), max_size=4))
    return ev, raw, lab, ratings, draw(stamps)


@settings(max_examples=300, deadline=None)
@given(requests(), st.randoms(use_true_random=False))
def test_outcome_records_are_the_contracts_bytes(
    request: tuple[InferenceEvent, bytes, EMLabel | None, list[int], datetime], rng: Random
) -> None:
    """What the joiner sends equals Outcome(...).to_bytes(): the contract holds unvalidated."""
    ev, raw, lab, ratings, now = request
    rid = ev.request_id
    inputs = [InputRecord("inference-events", "t", 0, 0, rid.encode(), raw)]
    if lab is not None:
        inputs.append(InputRecord("em-labels", "t", 0, 1, rid.encode(), lab.to_bytes()))
    for n, rating in enumerate(ratings):
        fb = UserFeedback(feedback_id=f"f{n}", request_id=rid, ts=now, kind="thumbs",
                          rating=rating)  # fmt: skip
        inputs.append(InputRecord("user-feedback", "t", 0, 2 + n, rid.encode(), fb.to_bytes()))
    rng.shuffle(inputs)
    processor = Processor(DictStore(), "w1", cache_entries=rng.choice([0, 10]))
    result = processor.process_batch(inputs, now)
    assert result.dead_letters == []
    if lab is not None:
        joined_at, got = now, result.outcomes[-1]
        em, em_full, points = score(ev, lab)
    else:
        assert result.outcomes == []
        joined_at = now + timedelta(seconds=WINDOW_S)
        (got,) = processor.expire(joined_at, WINDOW_S)
        em = em_full = points = None
    expected = Outcome(
        request_id=rid, event=ev, labeled=lab is not None, em=em, em_full=em_full,
        checkpoint_em=points, feedback_count=len(ratings),
        negative_feedback=sum(1 for r in ratings if r < 0), version=len(inputs),
        joined_at=joined_at,
    )  # fmt: skip
    assert got == join.OutcomeRecord(rid.encode(), expected.to_bytes())


def test_a_clock_outside_the_contract_emits_nothing() -> None:
    state = apply(None, event("r")).state
    for now in (datetime(2024, 5, 1), datetime(2300, 1, 1, tzinfo=UTC)):  # noqa: DTZ001
        with pytest.raises(ValueError, match="joined_at"):
            join.build_outcome(state, now, labeled=False)
