"""Write ``basic.jsonl``: a small labeled question set with computed gold answers.

Deterministic (a fixed seed and fixed tables), standard library only::

    python data/questions/generate.py            # writes data/questions/basic.jsonl
    python data/questions/generate.py --out FILE

Three segments, each one line per question in the question-file format that
``pipeline capture`` reads (``id``, ``segment``, ``question``, ``gold``):

- ``demo/arith/short``: addition, subtraction and multiplication at three
  difficulty levels (one, two and three digits; multiplication stays at one
  and two), the gold answer computed;
- ``demo/capitals/short``: "What is the capital of X?" from the table below;
- ``demo/facts/short``: unit and counting facts from the table below, the
  gold answer as digits and, where natural, as a word.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261203
"""Fixed: the same file every time."""

PER_LEVEL = 20
"""Arithmetic questions per operation and level."""

LEVELS: dict[str, dict[str, tuple[int, int]]] = {
    # level -> operation -> operand range (inclusive)
    "easy": {"add": (1, 9), "sub": (1, 9), "mul": (2, 9)},
    "medium": {"add": (10, 99), "sub": (10, 99), "mul": (3, 19)},
    "hard": {"add": (100, 999), "sub": (100, 999), "mul": (11, 49)},
}

SYMBOLS = {"add": "+", "sub": "-", "mul": "*"}

CAPITALS: dict[str, tuple[str, ...]] = {
    "France": ("Paris",),
    "Germany": ("Berlin",),
    "Italy": ("Rome",),
    "Spain": ("Madrid",),
    "Portugal": ("Lisbon",),
    "the United Kingdom": ("London",),
    "Ireland": ("Dublin",),
    "the Netherlands": ("Amsterdam",),
    "Belgium": ("Brussels",),
    "Switzerland": ("Bern", "Berne"),
    "Austria": ("Vienna",),
    "Poland": ("Warsaw",),
    "Czechia": ("Prague",),
    "Hungary": ("Budapest",),
    "Greece": ("Athens",),
    "Sweden": ("Stockholm",),
    "Norway": ("Oslo",),
    "Denmark": ("Copenhagen",),
    "Finland": ("Helsinki",),
    "Iceland": ("Reykjavik", "Reykjavík"),
    "Russia": ("Moscow",),
    "Ukraine": ("Kyiv", "Kiev"),
    "Turkey": ("Ankara",),
    "Egypt": ("Cairo",),
    "Kenya": ("Nairobi",),
    "Nigeria": ("Abuja",),
    "Ethiopia": ("Addis Ababa",),
    "Morocco": ("Rabat",),
    "South Africa": ("Pretoria", "Cape Town", "Bloemfontein"),
    "Ghana": ("Accra",),
    "Japan": ("Tokyo",),
    "China": ("Beijing", "Peking"),
    "South Korea": ("Seoul",),
    "India": ("New Delhi", "Delhi"),
    "Pakistan": ("Islamabad",),
    "Thailand": ("Bangkok",),
    "Vietnam": ("Hanoi",),
    "Indonesia": ("Jakarta",),
    "the Philippines": ("Manila",),
    "Iran": ("Tehran",),
    "Iraq": ("Baghdad",),
    "Saudi Arabia": ("Riyadh",),
    "Israel": ("Jerusalem",),
    "Australia": ("Canberra",),
    "New Zealand": ("Wellington",),
    "Canada": ("Ottawa",),
    "the United States": ("Washington, D.C.", "Washington", "Washington DC"),
    "Mexico": ("Mexico City",),
    "Brazil": ("Brasilia", "Brasília"),
    "Argentina": ("Buenos Aires",),
    "Chile": ("Santiago",),
    "Peru": ("Lima",),
    "Colombia": ("Bogota", "Bogotá"),
    "Venezuela": ("Caracas",),
    "Cuba": ("Havana",),
}

FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("How many centimeters are in a meter?", ("100", "one hundred")),
    ("How many millimeters are in a centimeter?", ("10", "ten")),
    ("How many meters are in a kilometer?", ("1000", "1,000", "one thousand")),
    ("How many grams are in a kilogram?", ("1000", "1,000", "one thousand")),
    ("How many milliliters are in a liter?", ("1000", "1,000", "one thousand")),
    ("How many seconds are in a minute?", ("60", "sixty")),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("How many days are in a week?", ("7", "seven")),
    ("How many days are in a leap year?", ("366",)),
    ("How many days are in a common year?", ("365",)),
    ("How many months are in a year?", ("12", "twelve")),
    ("How many weeks are in a year?", ("52", "fifty-two", "fifty two")),
    ("How many years are in a decade?", ("10", "ten")),
    ("How many years are in a century?", ("100", "one hundred")),
    ("How many years are in a millennium?", ("1000", "1,000", "one thousand")),
    ("How many inches are in a foot?", ("12", "twelve")),
    ("How many feet are in a yard?", ("3", "three")),
    ("How many ounces are in a pound?", ("16", "sixteen")),
    ("How many cents are in a dollar?", ("100", "one hundred")),
    ("How many items are in a dozen?", ("12", "twelve")),
    ("How many sides does a triangle have?", ("3", "three")),
    ("How many sides does a square have?", ("4", "four")),
    ("How many sides does a pentagon have?", ("5", "five")),
    ("How many sides does a hexagon have?", ("6", "six")),
    ("How many sides does an octagon have?", ("8", "eight")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("How many legs does an insect have?", ("6", "six")),
    ("How many continents are there?", ("7", "seven")),
    ("How many planets are in the solar system?", ("8", "eight")),
    ("How many players are on a soccer team on the field?", ("11", "eleven")),
    ("How many degrees are in a right angle?", ("90", "ninety")),
    ("How many degrees are in a full circle?", ("360",)),
    ("At how many degrees Celsius does water freeze?", ("0", "zero")),
    ("At how many degrees Celsius does water boil at sea level?", ("100", "one hundred")),
    ("How many letters are in the English alphabet?", ("26", "twenty-six", "twenty six")),
    ("How many strings does a standard guitar have?", ("6", "six")),
    ("How many keys does a standard piano have?", ("88", "eighty-eight")),
    ("How many bits are in a byte?", ("8", "eight")),
    ("How many colors are in a rainbow?", ("7", "seven")),
    ("What is the chemical symbol of gold?", ("Au",)),
    ("What is the chemical symbol of iron?", ("Fe",)),
    ("What is the chemical symbol of sodium?", ("Na",)),
    ("What is the chemical symbol of oxygen?", ("O",)),
    ("What is the chemical formula of water?", ("H2O",)),
    ("What is the largest planet in the solar system?", ("Jupiter",)),
    ("What planet is closest to the sun?", ("Mercury",)),
    ("What is the largest ocean on Earth?", ("Pacific", "Pacific Ocean")),
    ("What is the freezing point of water in degrees Fahrenheit?", ("32", "thirty-two")),
    ("What gas do plants absorb from the air?", ("carbon dioxide", "CO2")),
)


def arithmetic(rng: random.Random) -> list[dict[str, object]]:
    """Add, sub and mul at each level; subtraction keeps the result non-negative."""
    rows: list[dict[str, object]] = []
    for level, ops in LEVELS.items():
        for op, (low, high) in ops.items():
            for i in range(PER_LEVEL):
                a, b = rng.randint(low, high), rng.randint(low, high)
                if op == "sub" and b > a:
                    a, b = b, a
                value = a + b if op == "add" else a - b if op == "sub" else a * b
                rows.append(
                    {
                        "id": f"arith-{op}-{level}-{i:02d}",
                        "segment": "demo/arith/short",
                        "question": f"What is {a} {SYMBOLS[op]} {b}?",
                        "gold": [str(value)],
                    }
                )
    return rows


def capitals() -> list[dict[str, object]]:
    """One question per country of :data:`CAPITALS`, in table order."""
    return [
        {
            "id": f"capital-{i:02d}",
            "segment": "demo/capitals/short",
            "question": f"What is the capital of {country}?",
            "gold": list(golds),
        }
        for i, (country, golds) in enumerate(CAPITALS.items())
    ]


def facts() -> list[dict[str, object]]:
    """One question per row of :data:`FACTS`, in table order."""
    return [
        {
            "id": f"fact-{i:02d}",
            "segment": "demo/facts/short",
            "question": question,
            "gold": list(golds),
        }
        for i, (question, golds) in enumerate(FACTS)
    ]


def questions(seed: int = SEED) -> list[dict[str, object]]:
    """The whole set, segments interleaved in a seeded order (a partial capture covers all)."""
    rng = random.Random(seed)  # noqa: S311 - a fixed question order, not a secret
    rows = arithmetic(rng) + capitals() + facts()
    rng.shuffle(rows)
    return rows


def main() -> None:
    """Write the question file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("basic.jsonl"))
    args = parser.parse_args()
    rows = questions()
    with args.out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} questions to {args.out}")


if __name__ == "__main__":
    main()
