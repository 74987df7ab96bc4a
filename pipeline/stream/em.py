"""Exact Match (EM) as the SQuAD v1.1 evaluation script defines it, pure.

Normalisation follows the official script step for step (lower case, drop
ASCII punctuation, drop the articles a/an/the, fold whitespace) so EM numbers
here are comparable with published ones. Non-ASCII punctuation is kept, as
the script keeps it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from schemas.inference import InferenceEvent
from schemas.labels import EMLabel

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation, remove articles, fold whitespace (SQuAD order)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Iterable[str]) -> bool:
    """True when the normalised prediction equals any normalised gold answer."""
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(gold) for gold in golds)


def checkpoint_em(answers: Sequence[str], golds: Sequence[str]) -> tuple[bool, ...]:
    """EM of each trial answer along a trajectory, in order."""
    normalized_golds = {normalize_answer(gold) for gold in golds}
    return tuple(normalize_answer(answer) in normalized_golds for answer in answers)


@dataclass(frozen=True, slots=True)
class Scores:
    """EM of one request's final answer, its full-generation answer and its checkpoints."""

    em: bool
    em_full: bool | None
    checkpoint_em: tuple[bool, ...] | None


def _ran_to_end(event: InferenceEvent) -> bool:
    return event.exploration or event.stop_reason == "natural_end"


def score(event: InferenceEvent, label: EMLabel) -> Scores:
    """Score an event against its label.

    With gold answers everything is exact. With a verdict only the final
    answer's EM is known; when the verdict is positive the final answer is
    itself a gold answer, so checkpoints are scored against it. That is a
    lower bound (a checkpoint giving another acceptable answer counts as
    wrong), which errs towards stopping later, the safe side. A negative
    verdict says nothing about answers that differ from the final one, so
    checkpoints stay unknown.
    """
    trajectory = event.trajectory
    answers = [point.answer for point in trajectory] if trajectory else []
    if label.gold_answers is not None:
        golds: Sequence[str] = label.gold_answers
        em = exact_match(event.answer, golds)
        points = checkpoint_em(answers, golds) if answers else None
        if not _ran_to_end(event):
            return Scores(em, None, points)
        # The contract defines the full answer of an exploration request as
        # its last checkpoint's answer.
        full = points[-1] if points and event.exploration else em
        return Scores(em, full, points)
    em = bool(label.verdict)
    points = checkpoint_em(answers, [event.answer]) if answers and em else None
    return Scores(em, em if _ran_to_end(event) else None, points)
