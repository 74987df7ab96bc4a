"""Exact Match (EM) as the SQuAD v1.1 evaluation script defines it, pure.

Normalisation follows the official script step for step (lower case, drop
ASCII punctuation, drop the articles a/an/the, fold whitespace) so EM numbers
here are comparable with published ones. Non-ASCII punctuation is kept, as
the script keeps it.

:func:`score` normalises each distinct text of a request once (a trajectory
repeats its answers, and the final answer is usually among them), and
normalised texts are memoised: a request is scored again on every later
input (feedback), and answers recur across requests.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from schemas.inference import InferenceEvent
from schemas.labels import EMLabel

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation, remove articles, fold whitespace (SQuAD order)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


# Bounded, so memory stays flat whatever the answers; a miss costs one normalisation.
_normalized = lru_cache(maxsize=16_384)(normalize_answer)


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
    norm = _normalized
    answers = [norm(point.answer) for point in trajectory] if trajectory else []
    if label.gold_answers is not None:
        golds = {norm(gold) for gold in label.gold_answers}
        em = norm(event.answer) in golds
        points = tuple(answer in golds for answer in answers) if answers else None
        if not _ran_to_end(event):
            return Scores(em, None, points)
        # The contract defines the full answer of an exploration request as
        # its last checkpoint's answer.
        full = points[-1] if points and event.exploration else em
        return Scores(em, full, points)
    em = bool(label.verdict)
    if answers and em:
        final = norm(event.answer)
        points = tuple(answer == final for answer in answers)
    else:
        points = None
    return Scores(em, em if _ran_to_end(event) else None, points)
