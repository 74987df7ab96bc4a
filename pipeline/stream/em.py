"""Exact Match (EM) as the SQuAD v1.1 evaluation script defines it, pure.

Normalisation follows the official script step for step (lower case, drop
ASCII punctuation, drop the articles a/an/the, fold whitespace) so EM numbers
here are comparable with published ones. Non-ASCII punctuation is kept, as
the script keeps it.

Normalised texts are memoised (:data:`normalized`): answers recur within a
request (a trajectory repeats them) and across requests. The joiner
normalises an input's texts once, when it arrives (its join state keeps
them normalised, see :mod:`pipeline.stream.state`), and scores with
:func:`score_normalized`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple

from schemas.inference import InferenceEvent
from schemas.labels import EMLabel

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation, remove articles, fold whitespace (SQuAD order)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


# Bounded, so memory stays flat whatever the answers; a miss costs one normalisation.
normalized = lru_cache(maxsize=16_384)(normalize_answer)
""":func:`normalize_answer`, memoised (answers recur across requests)."""


def exact_match(prediction: str, golds: Iterable[str]) -> bool:
    """True when the normalised prediction equals any normalised gold answer."""
    target = normalize_answer(prediction)
    return any(target == normalize_answer(gold) for gold in golds)


def checkpoint_em(answers: Sequence[str], golds: Sequence[str]) -> tuple[bool, ...]:
    """EM of each trial answer along a trajectory, in order."""
    normalized_golds = {normalize_answer(gold) for gold in golds}
    return tuple(normalize_answer(answer) in normalized_golds for answer in answers)


class Scores(NamedTuple):
    """EM of one request's final answer, its full-generation answer and its checkpoints."""

    em: bool
    em_full: bool | None
    checkpoint_em: tuple[bool, ...] | None


def score(event: InferenceEvent, label: EMLabel) -> Scores:
    """Score an event against its label (see :func:`score_normalized`)."""
    trajectory = event.trajectory
    golds = label.gold_answers
    return score_normalized(
        normalized(event.answer),
        tuple(normalized(point.answer) for point in trajectory) if trajectory else None,
        ran_to_end=event.exploration or event.stop_reason == "natural_end",
        exploration=event.exploration,
        golds=frozenset(normalized(gold) for gold in golds) if golds is not None else None,
        verdict=label.verdict,
    )


def score_normalized(
    answer: str,
    answers: tuple[str, ...] | None,
    *,
    ran_to_end: bool,
    exploration: bool,
    golds: frozenset[str] | None,
    verdict: bool | None,
) -> Scores:
    """Score a request from its normalised answers and its label.

    ``answer`` is the normalised final answer, ``answers`` the normalised
    trajectory answers (None: no trajectory), ``ran_to_end`` whether the full
    answer is known (an exploration request or a natural end); the label is
    its normalised ``golds`` or, when those are None, its ``verdict``.

    With gold answers everything is exact. With a verdict only the final
    answer's EM is known; when the verdict is positive the final answer is
    itself a gold answer, so checkpoints are scored against it. That is a
    lower bound (a checkpoint giving another acceptable answer counts as
    wrong), which errs towards stopping later, the safe side. A negative
    verdict says nothing about answers that differ from the final one, so
    checkpoints stay unknown.
    """
    if golds is not None:
        em = answer in golds
        points = tuple([a in golds for a in answers]) if answers else None
        if not ran_to_end:
            return Scores(em, None, points)
        # The contract defines the full answer of an exploration request as
        # its last checkpoint's answer.
        full = points[-1] if points and exploration else em
        return Scores(em, full, points)
    em = bool(verdict)
    points = tuple([a == answer for a in answers]) if answers and em else None
    return Scores(em, em if ran_to_end else None, points)
