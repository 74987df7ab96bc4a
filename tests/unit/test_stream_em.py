"""EM as the SQuAD v1.1 script computes it, and scores of events against labels."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.stream.em import checkpoint_em, exact_match, normalize_answer, score
from schemas import Checkpoint, EMLabel
from schemas.examples import EXAMPLE_TS, inference_event


def squad_normalize(s: str) -> str:
    """The official SQuAD v1.1 evaluation script's normalize_answer, verbatim."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an apple, a pear", "apple pear"),
        ("Theatre", "theatre"),  # an article only as a whole word
        ("  Paris.\n", "paris"),
        ("U.S.A.", "usa"),
        ("the", ""),
        ("Caf\u00e9 \u00abnoir\u00bb", "caf\u00e9 \u00abnoir\u00bb"),  # non-ASCII kept, as SQuAD
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


@given(st.text())
def test_normalize_matches_the_official_script(text: str) -> None:
    assert normalize_answer(text) == squad_normalize(text)


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(once) == once


def test_exact_match_against_several_golds() -> None:
    assert exact_match("the Paris", ["London", "paris"])
    assert not exact_match("Paris, France", ["Paris"])
    assert not exact_match("Paris", [])


def test_checkpoint_em_is_aligned() -> None:
    assert checkpoint_em(["Lyon", "Paris!", "paris"], ["Paris"]) == (False, True, True)


def label(**fields: object) -> EMLabel:
    base: dict[str, object] = {
        "label_id": "l1",
        "request_id": "req-0001",
        "labeler_id": "x",
        "ts": EXAMPLE_TS,
    }
    return EMLabel.model_validate({**base, **fields})


def test_score_exploration_with_gold_answers() -> None:
    event = inference_event(exploration=True)  # trajectory "Paris, France", "Paris", "Paris"
    scores = score(event, label(gold_answers=["paris"]))
    assert (scores.em, scores.em_full, scores.checkpoint_em) == (True, True, (False, True, True))


def test_score_full_answer_is_the_last_checkpoint_for_exploration() -> None:
    event = inference_event(exploration=True)
    points = (
        Checkpoint(tokens=10, confidence=0.5, answer="Paris"),
        Checkpoint(tokens=57, confidence=0.9, answer="Lyon"),
    )
    event = event.model_copy(update={"trajectory": points})
    scores = score(event, label(gold_answers=["Paris"]))
    assert (scores.em, scores.em_full, scores.checkpoint_em) == (True, False, (True, False))


def test_score_early_stop_has_no_full_answer() -> None:
    event = inference_event(exploration=False)  # a confident stop, no trajectory
    scores = score(event, label(gold_answers=["Lyon"]))
    assert (scores.em, scores.em_full, scores.checkpoint_em) == (False, None, None)


def test_score_positive_verdict_scores_checkpoints_against_the_answer() -> None:
    scores = score(inference_event(exploration=True), label(verdict=True))
    assert (scores.em, scores.em_full, scores.checkpoint_em) == (True, True, (False, True, True))


def test_score_negative_verdict_leaves_checkpoints_unknown() -> None:
    scores = score(inference_event(exploration=True), label(verdict=False))
    assert (scores.em, scores.em_full, scores.checkpoint_em) == (False, False, None)
