"""Every value the contract admits fits its warehouse column (issue 19: no poison pills).

Each numeric and time field's extreme admissible values are read from the
models' own bounds (the field metadata: ``ge``/``le``; a float with no upper
bound gets the largest finite double, as the contract would then admit it).
Valid messages carrying them are mapped to rows by
:mod:`pipeline.warehouse.rows` and inserted into the session stack's real
tables; the insert must succeed and the values read back.
"""

from __future__ import annotations

import struct
import sys
import typing
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import annotated_types
import clickhouse_connect
import pytest
from pydantic.fields import FieldInfo

from pipeline.config import Settings
from pipeline.warehouse import rows
from pipeline.warehouse.client import connect
from schemas import DeadLetter, InferenceEvent, Outcome, UserFeedback
from schemas._base import Part
from schemas.examples import example_messages
from schemas.inference import Checkpoint

pytestmark = pytest.mark.integration

LOW, HIGH = 0, 1


def extremes(model: type[Part], name: str) -> tuple[Any, Any]:
    """The smallest and largest value the model admits for one numeric or time field."""
    low: Any = None
    high: Any = None
    field = model.model_fields[name]
    metadata = list(field.metadata)
    for arm in typing.get_args(field.annotation):  # an optional field: its non-null arm
        if typing.get_origin(arm) is Annotated:
            for meta in typing.get_args(arm)[1:]:
                metadata += meta.metadata if isinstance(meta, FieldInfo) else [meta]
    for meta in metadata:
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
    assert low is not None, f"{model.__name__}.{name} has no lower bound"
    if high is None:
        annotation = model.model_fields[name].annotation
        assert annotation is float, f"{model.__name__}.{name} has no upper bound"
        high = sys.float_info.max
    return low, high


def pick(model: type[Part], name: str, end: int) -> Any:
    return extremes(model, name)[end]


def event_at(end: int, *, exploration: bool) -> InferenceEvent:
    """A valid event with every numeric and time field at its low or high end."""
    ev = InferenceEvent
    tokens = pick(ev, "tokens_generated", end)
    budget = max(tokens, pick(ev, "tokens_budget", end))
    point_tokens = pick(Checkpoint, "tokens", end)
    points = [
        {
            "tokens": point_tokens - i,
            "confidence": pick(Checkpoint, "confidence", end),
            "answer": "",
        }
        for i in (range(2, -1, -1) if end == HIGH else range(1))
    ]
    data = example_messages()["inference_event"].model_dump()
    data.update(
        event_id=f"evt-{uuid.uuid4().hex}",
        request_id=f"req-{uuid.uuid4().hex}",
        ts=pick(ev, "ts", end),
        policy_version=pick(ev, "policy_version", end),
        exploration=exploration,
        threshold=None if exploration else extremes(ev, "threshold")[end],
        tokens_prompt=pick(ev, "tokens_prompt", end),
        tokens_generated=tokens,
        tokens_probe=pick(ev, "tokens_probe", end),
        tokens_budget=budget,
        stop_reason="natural_end",
        confidence=pick(ev, "confidence", end),
        latency_ms=pick(ev, "latency_ms", end),
        node_load=pick(ev, "node_load", end),
        trajectory=points if exploration else None,
    )
    return InferenceEvent.model_validate(data)


def outcome_at(end: int, event: InferenceEvent) -> Outcome:
    points = len(event.trajectory or ())
    return Outcome.model_validate(
        {
            "request_id": event.request_id,
            "event": event,
            "labeled": True,
            "em": True,
            "em_full": False,
            "checkpoint_em": [True] * points if points else None,
            "feedback_count": pick(Outcome, "feedback_count", end),
            "negative_feedback": pick(Outcome, "negative_feedback", end),
            "version": pick(Outcome, "version", end),
            "joined_at": pick(Outcome, "joined_at", end),
        }
    )


def float32(value: float) -> float:
    """What a ``Float32`` column gives back for ``value``."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def ms(value: datetime) -> datetime:
    """What a ``DateTime64(3, 'UTC')`` column gives back for ``value``."""
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def insert(client: Any, table: str, columns: tuple[str, ...], data: list[list[Any]]) -> None:
    try:
        client.insert(table, data, column_names=list(columns))
    except (clickhouse_connect.driver.exceptions.Error, OverflowError, ValueError) as err:
        pytest.fail(f"{table} refused a value the contract admits: {err}")


@pytest.fixture
def client(stack: Settings) -> Any:
    ch = connect(stack)
    yield ch
    ch.close()


@pytest.mark.parametrize("end", [LOW, HIGH], ids=["low", "high"])
@pytest.mark.parametrize("exploration", [True, False], ids=["exploration", "served"])
def test_inference_event_extremes_fit_inference_events(
    client: Any, end: int, exploration: bool
) -> None:
    event = event_at(end, exploration=exploration)
    columns, row = rows.inference_event_row(event, "inference-events", 0, 0)
    insert(client, "inference_events", columns, [row])

    got = client.query(
        "SELECT ts, policy_version, threshold, tokens_prompt, tokens_generated, tokens_budget,"
        " tokens_probe, confidence, latency_ms, node_load FROM inference_events"
        " WHERE event_id = {id:String}",
        parameters={"id": event.event_id},
    ).result_rows
    assert len(got) == 1
    ts, version, threshold, prompt, generated, budget, probe, conf, latency, load = got[0]
    assert as_utc(ts) == ms(event.ts)
    assert version == event.policy_version
    assert threshold == (None if event.threshold is None else float32(event.threshold))
    assert (prompt, generated, budget, probe) == (
        event.tokens_prompt,
        event.tokens_generated,
        event.tokens_budget,
        event.tokens_probe,
    )
    assert (conf, latency, load) == (
        float32(event.confidence),
        float32(event.latency_ms),
        float32(event.node_load),
    )


@pytest.mark.parametrize("end", [LOW, HIGH], ids=["low", "high"])
def test_outcome_extremes_fit_outcomes_and_trajectory_points(client: Any, end: int) -> None:
    outcome = outcome_at(end, event_at(end, exploration=True))
    event = outcome.event
    insert(client, "outcomes", rows.OUTCOME_COLUMNS, [rows.outcome_row(outcome, "t", 0, 0)])
    insert(client, "trajectory_points", rows.TRAJECTORY_COLUMNS, rows.trajectory_rows(outcome))

    got = client.query(
        "SELECT version, ts, policy_version, latency_ms, checkpoints, feedback_count,"
        " negative_feedback, joined_at, tokens_probe FROM outcomes"
        " WHERE request_id = {id:String}",
        parameters={"id": outcome.request_id},
    ).result_rows
    assert len(got) == 1
    version, ts, policy_version, latency, points, count, negative, joined, probe = got[0]
    assert version == outcome.version
    assert as_utc(ts) == ms(event.ts)
    assert as_utc(joined) == ms(outcome.joined_at)
    assert policy_version == event.policy_version
    assert latency == float32(event.latency_ms)
    assert points == len(event.trajectory or ())
    assert (count, negative) == (outcome.feedback_count, outcome.negative_feedback)
    assert probe == event.tokens_probe

    got = client.query(
        "SELECT idx, tokens, confidence, version, ts FROM trajectory_points"
        " WHERE request_id = {id:String} ORDER BY idx",
        parameters={"id": outcome.request_id},
    ).result_rows
    assert event.trajectory is not None
    assert [(r[0], r[1], r[2]) for r in got] == [
        (i, p.tokens, float32(p.confidence)) for i, p in enumerate(event.trajectory)
    ]
    assert {(r[3], as_utc(r[4])) for r in got} == {(outcome.version, ms(event.ts))}


@pytest.mark.parametrize("end", [LOW, HIGH], ids=["low", "high"])
def test_feedback_extremes_fit_user_feedback(client: Any, end: int) -> None:
    data = example_messages()["user_feedback"].model_dump()
    data.update(
        feedback_id=f"fb-{uuid.uuid4().hex}",
        ts=pick(UserFeedback, "ts", end),
        rating=pick(UserFeedback, "rating", end),
    )
    feedback = UserFeedback.model_validate(data)
    insert(client, "user_feedback", rows.FEEDBACK_COLUMNS, [rows.feedback_row(feedback, "t", 0, 0)])

    got = client.query(
        "SELECT ts, rating FROM user_feedback WHERE feedback_id = {id:String}",
        parameters={"id": feedback.feedback_id},
    ).result_rows
    assert [(as_utc(ts), rating) for ts, rating in got] == [(ms(feedback.ts), feedback.rating)]


@pytest.mark.parametrize("end", [LOW, HIGH], ids=["low", "high"])
def test_dead_letter_extremes_fit_dead_letters(client: Any, end: int) -> None:
    data = example_messages()["dead_letter"].model_dump()
    data.update(
        source_topic=f"topic-{uuid.uuid4().hex}",
        partition=pick(DeadLetter, "partition", end),
        offset=pick(DeadLetter, "offset", end),
        ts=pick(DeadLetter, "ts", end),
    )
    letter = DeadLetter.model_validate(data)
    insert(client, "dead_letters", rows.DEAD_LETTER_COLUMNS, [rows.dead_letter_row(letter)])

    got = client.query(
        "SELECT partition, offset, ts, raw_bytes FROM dead_letters"
        " WHERE source_topic = {topic:String}",
        parameters={"topic": letter.source_topic},
    ).result_rows
    assert [(p, o, as_utc(ts), n) for p, o, ts, n in got] == [
        (letter.partition, letter.offset, ms(letter.ts), len(letter.raw))
    ]
