"""Answer strings: gold answers, plausible wrong ones, and surface variants.

Downstream, exact match compares answers after SQuAD-style normalisation
(lower case, no punctuation, no articles, single spaces). The strings here
exercise that: correct answers sometimes come as ``"Paris."`` or
``"The Paris"``, and a wrong answer never normalises to the gold one.
"""

from __future__ import annotations

import random
import re
import string

from pipeline.sim.scenario import Task

_CITIES = (
    "Paris", "Hanoi", "Tokyo", "Ottawa", "Canberra", "Nairobi", "Lima", "Oslo",
    "Cairo", "Madrid", "Lisbon", "Santiago", "Bern", "Dublin", "Warsaw", "Seoul",
    "Bangkok", "Accra", "Quito", "Vienna", "Helsinki", "Manila", "Rabat", "Hanover",
)  # fmt: skip
_NAMES = (
    "Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
    "Donald Knuth", "Frances Allen", "John McCarthy", "Margaret Hamilton", "Ken Thompson",
    "Radia Perlman", "Tony Hoare", "Leslie Lamport", "Shafi Goldwasser", "Niklaus Wirth",
)  # fmt: skip

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD-style normalisation, used here only to keep wrong answers wrong."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def gold_answer(task: Task, rng: random.Random) -> str:
    """Draw the gold answer of a request of ``task``."""
    if task == "qa":
        return rng.choice(_CITIES)
    if task == "math":
        return str(rng.randint(2, 999))
    return rng.choice(_NAMES)


def correct_form(task: Task, gold: str, rng: random.Random) -> str:
    """A surface form of the gold answer that normalises to it."""
    u = rng.random()
    if u < 0.75:
        return gold
    if u < 0.9:
        return f"{gold}."
    if task == "math":
        return f"= {gold}"
    return f"The {gold}" if task == "qa" else gold.lower()


def alias(task: Task, gold: str, rng: random.Random) -> str:
    """A labeler's variant of the gold answer (``"The Paris"``, ``"31."``)."""
    if task == "math":
        return rng.choice((f"{gold}.", f" {gold} "))
    return rng.choice((f"The {gold}", f"{gold}.", gold.upper()))


def wrong_answer(task: Task, gold: str, rng: random.Random) -> str:
    """A plausible wrong answer: another item, a near miss or a partial expression.

    Like the real sample, some are fragments (``"68 - 3"``) rather than answers.
    """
    target = normalize(gold)
    for _ in range(8):
        candidate = _wrong_candidate(task, gold, rng)
        if candidate and normalize(candidate) != target:
            return candidate
    return f"not {gold}"  # unreachable in practice: the pools have many items


def _wrong_candidate(task: Task, gold: str, rng: random.Random) -> str:
    u = rng.random()
    if task == "math":
        value = int(gold)
        if u < 0.6:
            return str(value + rng.choice((-10, -2, -1, 1, 2, 10)))
        return f"{value + rng.randint(1, 50)} - {rng.randint(1, 9)}"
    pool = _CITIES if task == "qa" else _NAMES
    if u < 0.8:
        return rng.choice(pool)
    if task == "extract":
        return rng.choice(pool).split()[0]
    return str(rng.randint(1, 100)) + "."
