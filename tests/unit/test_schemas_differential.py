"""The committed JSON Schemas and the pydantic models accept the same wire records.

About 200 records per message type, generated from the examples and mutated
(wrong types, a bool for an int, strings for numbers, missing fields, NaN and
Infinity literals, empty or garbage timestamps, numbers past their bounds, an
exploration event without its trajectory, unknown fields), go through both:
``Model.model_validate_json(text)`` and, for the schema, a strict RFC 8259
parse followed by a Draft 2020-12 validator **with format assertion**.

Two things a non-Python producer must do for the schemas to mean what the
models mean (README, "Contracts"): parse and emit strict JSON (no ``NaN`` or
``Infinity`` literals), and validate with format assertion on (``date-time``;
Draft 2020-12 treats ``format`` as an annotation unless asked).

Where they may still differ is listed in :data:`EXCEPTIONS`: rules between two
fields' values (a comparison, an equality, an order, a checksum) that JSON
Schema cannot state. There the schema accepts and the model refuses, with one
of the listed messages; every other disagreement fails the test.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from schemas.examples import example_messages
from schemas.registry import MESSAGE_TYPES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
RECORDS_PER_TYPE = 200

_EVENT_RULES = (
    "exceeds tokens_budget",
    "requires tokens_generated == tokens_budget",
    "requires confidence >= threshold",
    "trajectory token counts must strictly increase",
    "trajectory goes beyond tokens_generated",
)
_POLICY_RULES = (
    "min_tokens exceeds token_budget",
    "schedule steps must be sorted",
)
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "inference_event": _EVENT_RULES,
    "em_label": (),
    "user_feedback": (),
    "outcome": (
        *_EVENT_RULES,
        "request_id differs from event.request_id",
        "checkpoint_em must have one entry per trajectory checkpoint",
        "negative_feedback exceeds feedback_count",
    ),
    # The checksum is a hash of the canonical body: no schema can recompute it.
    "threshold_update": ("checksum does not match", *_POLICY_RULES),
    # Expressible as if/then, but schemas/control.py is another change's: to do there.
    "policy_ack": ("applied_at is required iff", "reason is required iff"),
    "dead_letter": (),
}
"""Per message type: the model's errors for rules JSON Schema cannot state."""

TIMESTAMPS = (
    "", "NaN", "garbage", "1704067200", "2024-05-01", "2024-05-01T12:00Z",
    "2024-05-01 12:00:00Z", "2024-05-01T12:00:00", "2024-05-01T12:00:00+0000",
    "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-05-01T24:00:00Z",
    "2024-05-01T12:00:60Z", "2024-05-01T12:00:00+15:00", "1900-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z", "2299-12-31T23:59:59Z", "2300-01-01T00:00:00Z",
    "1901-01-01T00:00:00+14:00", "2298-12-31T23:59:59.999999999-14:00",
    "2024-05-01t12:00:00z", "2024-05-01T12:00:00.123456789+05:30", "2024-05-01T12:00:00-00:00",
)  # fmt: skip
"""Timestamps to try: valid ones at the edges, and what parsers are lax about."""

VALUES: tuple[Any, ...] = (
    "", "x", "NaN", "1", "true", "a" * 5000, " id with space", 0, -1, 1, 2, 1.5, -0.5, 1e-320,
    True, False, None, [], {}, [1], {"a": 1}, 2**15, 2**16, 2**31, 2**32, 2**63, 2**64,
    604_800_000, 604_800_001, 1_000_001, 3.5e38, 1e39, math.nan, math.inf, -math.inf,
)  # fmt: skip
"""Replacement values: every JSON type, and numbers on either side of the bounds."""

TIME_KEYS = {"ts", "joined_at", "created_at", "applied_at"}


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _refuse_constant(literal: str) -> Any:
    msg = f"{literal} is not JSON"
    raise ValueError(msg)


def schema_accepts(check: Draft202012Validator, text: str) -> bool:
    """Strict JSON (no NaN/Infinity literals), then the schema with format assertion."""
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return False
    return bool(check.is_valid(document))


INTEGRAL_FLOAT = "an integer written with a fraction"
"""JSON has one number type and Draft 2020-12's ``integer`` includes ``3.0``; the
models refuse it (strict). Producers write integers without a fraction."""


def model_verdict(name: str, text: str) -> list[str] | None:
    """None when the model accepts ``text``; else its error messages."""
    try:
        MESSAGE_TYPES[name].model_validate_json(text)
    except ValidationError as err:
        return [_message(e) for e in err.errors()]
    return None


def _message(error: Any) -> str:
    value = error.get("input")
    if error["type"] == "int_type" and isinstance(value, float) and value.is_integer():
        return INTEGRAL_FLOAT
    return str(error["msg"])


# -- generation ------------------------------------------------------------------------


def _containers(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, Any]]:
    """Every (container, key) pair under ``doc``: the places a mutation can hit."""
    found: list[tuple[Any, Any]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        found.append((doc, key))
        if isinstance(value, dict | list):
            found += _containers(value, (*path, key))
    return found


def _numbers(doc: Any) -> list[tuple[Any, Any]]:
    return [
        (c, k)
        for c, k in _containers(doc)
        if isinstance(c[k], int | float) and not isinstance(c[k], bool)
    ]


def _dicts_with(doc: Any, key: str) -> list[dict[str, Any]]:
    return [c[k] for c, k in _containers({"": doc}) if isinstance(c[k], dict) and key in c[k]]


def _mutate(doc: Any, rng: random.Random) -> None:
    places = _containers(doc)
    numbers = _numbers(doc)
    kind = rng.randrange(10)
    if kind == 0:  # any place, any value
        container, key = rng.choice(places)
        container[key] = rng.choice(VALUES)
    elif kind == 1:  # a missing field
        dicts = [(c, k) for c, k in places if isinstance(c, dict)]
        container, key = rng.choice(dicts)
        del container[key]
    elif kind == 2 and numbers:  # a string for a number, or a bool for it
        container, key = rng.choice(numbers)
        container[key] = rng.choice((str(container[key]), True, False, float(container[key])))
    elif kind == 3 and numbers:  # a number past (or at) a bound
        container, key = rng.choice(numbers)
        container[key] = rng.choice(VALUES[7:])
    elif kind == 4:  # a timestamp
        times = [(c, k) for c, k in places if isinstance(c, dict) and k in TIME_KEYS]
        if times:
            container, key = rng.choice(times)
            container[key] = rng.choice(TIMESTAMPS)
    elif kind == 5 and isinstance(doc, dict):  # the version of the contract
        doc["schema_version"] = rng.choice((True, False, 2, 0, "1", 1.0, None, 1))
    elif kind == 6:  # an exploration event without its trajectory
        for event in _dicts_with(doc, "exploration"):
            event.update(exploration=True, threshold=None)
            if rng.random() < 0.5:
                event.pop("trajectory", None)
            else:
                event["trajectory"] = None
    elif kind == 7 and numbers:  # a plausible value: reaches the rules between fields
        container, key = rng.choice(numbers)
        container[key] = rng.choice((rng.randrange(0, 300), round(rng.random(), 3)))
    elif kind == 8:  # an unknown field
        nested: list[Any] = [c[k] for c, k in places if isinstance(c[k], dict)] + [doc]
        rng.choice(nested)["unexpected"] = 1
    else:  # a flag flipped, or a string emptied
        flags = [(c, k) for c, k in places if isinstance(c[k], bool | str)]
        if flags:
            container, key = rng.choice(flags)
            value = container[key]
            container[key] = (not value) if isinstance(value, bool) else ""


def records(name: str) -> list[str]:
    """The example and ``RECORDS_PER_TYPE - 1`` mutants of it, as JSON text."""
    rng = random.Random(f"differential-{name}")  # noqa: S311  # seeded test data, not secrets
    base = json.loads(example_messages()[name].to_bytes())
    texts = [json.dumps(base)]
    while len(texts) < RECORDS_PER_TYPE:
        doc = json.loads(json.dumps(base))
        for _ in range(rng.randint(1, 3)):
            _mutate(doc, rng)
        texts.append(json.dumps(doc))  # allow_nan: NaN/Infinity literals, as sloppy producers
    return texts


# -- the tests -------------------------------------------------------------------------


def test_date_time_format_is_asserted() -> None:
    assert "date-time" in Draft202012Validator.FORMAT_CHECKER.checkers  # rfc3339-validator


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_schema_and_model_agree_on_mutated_records(name: str) -> None:
    check = validator(name)
    allowed = EXCEPTIONS[name]
    disagreements: list[str] = []
    verdicts = {True: 0, False: 0}
    for text in records(name):
        errors = model_verdict(name, text)
        by_schema = schema_accepts(check, text)
        verdicts[errors is None] += 1
        if by_schema == (errors is None):
            continue
        documented = (
            by_schema
            and errors
            and all(any(a in e for a in (*allowed, INTEGRAL_FLOAT)) for e in errors)
        )
        if not documented:
            disagreements.append(f"schema {by_schema}, model {errors}: {text[:300]}")
    assert not disagreements, "\n".join(disagreements[:10])
    assert verdicts[True] >= 5, "too few accepted records to compare"
    assert verdicts[False] >= RECORDS_PER_TYPE // 2, "too few refused records to compare"


def _event(**changes: Any) -> str:
    doc = json.loads(example_messages()["inference_event"].to_bytes())
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(
    "text",
    [
        _event(schema_version=True),
        _event(exploration=True, trajectory=None),
        _event(ts=""),
        _event(ts="NaN"),
        _event(ts="1704067200"),
        _event(latency_ms=math.nan),
        _event(latency_ms=1e39),
        _event(policy_version=2**32),
    ],
    ids=["bool-version", "no-trajectory", "empty-ts", "nan-ts", "epoch-ts", "nan", "f32", "u32"],
)
def test_known_disagreements_are_refused_by_both(text: str) -> None:
    assert model_verdict("inference_event", text) is not None
    assert not schema_accepts(validator("inference_event"), text)


def test_extremes_are_accepted_by_both() -> None:
    text = _event(
        ts="2298-12-31T23:59:59.999999-14:00",
        latency_ms=604_800_000,
        policy_version=2**32 - 1,
        exploration=False,
        stop_reason="natural_end",
        trajectory=None,
        threshold=1.0,
    )
    assert model_verdict("inference_event", text) is None
    assert schema_accepts(validator("inference_event"), text)
