"""Labels, user feedback, joined outcomes and dead letters."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import DeadLetter, EMLabel, Outcome, UserFeedback
from tests.unit._messages import EXAMPLES, parse, wire


def test_em_label_needs_exactly_one_of_gold_answers_or_verdict() -> None:
    data = wire(EXAMPLES["em_label"])
    assert parse(EMLabel, {**data, "gold_answers": None, "verdict": False}).verdict is False
    cases: list[dict[str, Any]] = [{"verdict": True}, {"gold_answers": None}]
    for change in cases:
        with pytest.raises(ValidationError, match="exactly one"):
            parse(EMLabel, {**data, **change})
    for answers in [[], ["a"] * 17, ["a" * 1025]]:
        with pytest.raises(ValidationError):
            parse(EMLabel, {**data, "gold_answers": answers})


def test_user_feedback_rules() -> None:
    data = wire(EXAMPLES["user_feedback"])
    with pytest.raises(ValidationError, match="only allowed with kind"):
        parse(UserFeedback, {**data, "kind": "thumbs"})
    assert parse(UserFeedback, {**data, "kind": "thumbs", "correction": None}).rating == -1
    with pytest.raises(ValidationError):
        parse(UserFeedback, {**data, "rating": 2})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"request_id": "req-other"}, "differs"),
        ({"labeled": False}, "null while unlabeled"),
        ({"em": None}, "needs em"),
        ({"checkpoint_em": [True]}, "one entry per trajectory checkpoint"),
        ({"negative_feedback": 2}, "exceeds feedback_count"),
        ({"version": 0}, "version"),
    ],
)
def test_outcome_rules(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        parse(Outcome, {**wire(EXAMPLES["outcome"]), **change})


def test_unlabeled_outcome_has_no_em() -> None:
    data = wire(EXAMPLES["outcome"])
    data.update(labeled=False, em=None, em_full=None, checkpoint_em=None)
    assert parse(Outcome, data).em is None


@given(key=st.none() | st.binary(max_size=64), raw=st.binary(max_size=2048))
def test_dead_letter_bytes_round_trip_as_base64(key: bytes | None, raw: bytes) -> None:
    letter = EXAMPLES["dead_letter"].model_copy(update={"key": key, "raw": raw})
    letter = DeadLetter.model_validate(letter.model_dump())
    assert DeadLetter.from_bytes(letter.to_bytes()) == letter


def test_dead_letter_accepts_standard_base64_and_truncates_long_errors() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF, 0x00])
    data = {**wire(EXAMPLES["dead_letter"]), "raw": base64.b64encode(raw).decode()}
    assert parse(DeadLetter, data).raw == raw
    fields = EXAMPLES["dead_letter"].model_dump(exclude={"schema_version", "error"})
    letter = DeadLetter.capture(error="e" * 10_000, **fields)
    assert len(letter.error) == 4096
    with pytest.raises(ValidationError):
        DeadLetter(error="e" * 4097, **fields)
