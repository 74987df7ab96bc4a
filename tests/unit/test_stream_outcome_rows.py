"""The sink's fast outcome rows equal the contract's rows, and refuse what they cannot vouch for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stream.outcome_rows import outcome_rows
from pipeline.warehouse import rows
from schemas import InferenceEvent, Outcome
from schemas.examples import example_messages
from tests.unit.test_schemas_property import inference_events, stamps

OUTCOME = example_messages()["outcome"]
assert isinstance(OUTCOME, Outcome)


@st.composite
def outcomes(draw: st.DrawFn) -> Outcome:
    event: InferenceEvent = draw(inference_events())
    labeled = draw(st.booleans())
    em = em_full = points = None
    if labeled:
        em, em_full = draw(st.booleans()), draw(st.none() | st.booleans())
        if event.trajectory and draw(st.booleans()):
            points = tuple(draw(st.booleans()) for _ in event.trajectory)
    count = draw(st.integers(0, 2**63 - 1))
    return Outcome(
        request_id=event.request_id,
        event=event,
        labeled=labeled,
        em=em,
        em_full=em_full,
        checkpoint_em=points,
        feedback_count=count,
        negative_feedback=draw(st.integers(0, count)),
        version=draw(st.integers(1, 2**63 - 1)),
        joined_at=draw(stamps),
    )


def contract_rows(outcome: Outcome) -> tuple[list[Any], list[list[Any]], rows.Contribution]:
    row = rows.outcome_row(outcome, "t.outcomes", 3, 42)[:-1]  # without prev
    return row, rows.trajectory_rows(outcome), rows.contribution(outcome)


@settings(max_examples=300, deadline=None)
@given(outcomes())
def test_fast_rows_equal_the_contract_rows(outcome: Outcome) -> None:
    got = outcome_rows(outcome.to_bytes(), "t.outcomes", 3, 42)
    assert got is not None
    assert (got.row, got.points, got.contribution) == contract_rows(outcome)
    assert (got.request_id, got.version) == (outcome.request_id, outcome.version)
    # Equal values of the same types: what clickhouse-connect serialises.
    assert [type(v) for v in got.row] == [type(v) for v in contract_rows(outcome)[0]]


def mutated(path: tuple[str, ...], value: Any) -> bytes:
    doc = json.loads(OUTCOME.to_bytes())
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        mutated(("event",), KeyError),
        mutated(("request_id",), "someone-else"),
        mutated(("event", "tokens_generated"), -1),
        mutated(("event", "tokens_budget"), 2**40),
        mutated(("event", "tokens_prompt"), "120"),
        mutated(("event", "exploration"), 1),
        mutated(("event", "ts"), "2024-05-01T12:00:00"),  # naive
        mutated(("event", "ts"), "yesterday"),
        mutated(("event", "segment", "tenant"), None),
        mutated(("event", "trajectory"), []),
        mutated(("event", "trajectory", 0, "tokens"), 1.5),
        mutated(("checkpoint_em",), [True]),
        mutated(("labeled",), False),  # em set while unlabeled
        mutated(("em",), None),  # labeled without em
        mutated(("negative_feedback",), 5),
        mutated(("version",), 0),
        mutated(("schema_version",), 2),
    ],
)
def test_what_the_check_cannot_vouch_for_goes_to_the_contract(raw: bytes) -> None:
    assert outcome_rows(raw, "t", 0, 0) is None


def test_timestamps_in_other_zones_are_normalised_to_utc() -> None:
    raw = mutated(("event", "ts"), "2024-05-01T14:00:00+02:00")
    got = outcome_rows(raw, "t", 0, 0)
    assert got is not None
    assert got.row[3] == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert got.row[3].tzinfo is UTC
