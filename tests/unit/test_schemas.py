"""Message contracts: wire round trips, bounds, cross-field rules, schema drift."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    MAX_TOKENS,
    MESSAGE_TYPES,
    InferenceEvent,
    Segment,
)
from schemas.examples import EXAMPLE_TS, inference_event
from schemas.export import SCHEMA_DIR, export_all, main, render_all
from tests.unit._messages import EXAMPLES, parse, wire

# --- round trips -------------------------------------------------------------


def test_registry_names_every_message_type_once() -> None:
    assert set(MESSAGE_TYPES) == set(EXAMPLES)
    assert len(set(MESSAGE_TYPES.values())) == len(MESSAGE_TYPES)
    for name, message in EXAMPLES.items():
        assert type(message) is MESSAGE_TYPES[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_message_round_trips_through_bytes(name: str) -> None:
    message = EXAMPLES[name]
    data = message.to_bytes()
    assert isinstance(data, bytes)
    again = MESSAGE_TYPES[name].from_bytes(data)
    assert again == message
    assert again.to_bytes() == data


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_message_refuses_unknown_version_and_extra_fields(name: str) -> None:
    cls = MESSAGE_TYPES[name]
    with pytest.raises(ValidationError, match="schema_version"):
        parse(cls, {**wire(EXAMPLES[name]), "schema_version": 2})
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse(cls, {**wire(EXAMPLES[name]), "surprise": 1})


def test_messages_are_frozen() -> None:
    event = inference_event()
    with pytest.raises(ValidationError, match="frozen"):
        event.answer = "London"  # type: ignore[misc]  # writing is the point


# --- JSON from other producers ----------------------------------------------


def test_json_accepts_ints_for_floats_and_offset_timestamps() -> None:
    data = wire(inference_event())
    data.update(latency_ms=800, node_load=0, confidence=1, ts="2024-05-01T14:00:00+02:00")
    event = parse(InferenceEvent, data)
    assert event.latency_ms == 800.0
    assert event.confidence == 1.0
    assert event.ts == EXAMPLE_TS
    assert event.ts.tzinfo is UTC


def test_timestamps_are_normalised_to_utc_on_the_wire() -> None:
    later = datetime(2024, 5, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    event = inference_event().model_copy(update={"ts": later})
    event = InferenceEvent.model_validate(event.model_dump())
    assert wire(event)["ts"] == "2024-05-01T12:00:00Z"


def test_strict_types_refuse_coercions() -> None:
    for field, value in [("tokens_prompt", "120"), ("tokens_prompt", 1.5), ("exploration", 1)]:
        with pytest.raises(ValidationError, match=field):
            parse(InferenceEvent, {**wire(inference_event()), field: value})


def test_python_callers_may_pass_lists_for_tuples_but_items_stay_strict() -> None:
    data = inference_event().model_dump()
    data["trajectory"] = list(data["trajectory"])
    assert InferenceEvent.model_validate(data) == inference_event()
    data["trajectory"][0] = {**data["trajectory"][0], "tokens": "16"}
    with pytest.raises(ValidationError, match="tokens"):
        InferenceEvent.model_validate(data)


# --- bounds and rules of InferenceEvent -------------------------------------

TOO_MANY_POINTS = [{"tokens": i, "confidence": 0.5, "answer": "x"} for i in range(513)]
FINITE = "finite number"
GE, LE = "greater than or equal", "less than or equal"
ID_PATTERN = "should match pattern"

BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("nan confidence", {"confidence": math.nan}, FINITE),
    ("inf confidence", {"confidence": math.inf}, FINITE),
    ("confidence above 1", {"confidence": 1.5}, LE),
    ("negative confidence", {"confidence": -0.01}, GE),
    ("negative tokens", {"tokens_prompt": -1}, GE),
    ("tokens over the cap", {"tokens_prompt": MAX_TOKENS + 1}, LE),
    ("zero budget", {"tokens_budget": 0}, GE),
    ("generated over budget", {"tokens_generated": 257}, "exceeds tokens_budget"),
    ("budget stop below budget", {"stop_reason": "budget"}, "requires tokens_generated =="),
    ("empty id", {"request_id": ""}, "at least 1 character"),
    ("id too long", {"request_id": "r" * 129}, "at most 128 characters"),
    ("id with space", {"node_id": "node a"}, ID_PATTERN),
    ("id with control char", {"event_id": "evt\x00"}, ID_PATTERN),
    ("answer too long", {"answer": "a" * 4097}, "at most 4096 characters"),
    ("trajectory too long", {"trajectory": TOO_MANY_POINTS}, "at most 512 items"),
    ("empty trajectory", {"trajectory": []}, "at least 1 item"),
    ("trajectory repeats", {"trajectory": TOO_MANY_POINTS[3:4] * 2}, "strictly increase"),
    ("trajectory past generated", {"tokens_generated": 40}, "beyond tokens_generated"),
    (
        "checkpoint answer too long",
        {"trajectory": [{**TOO_MANY_POINTS[1], "answer": "a" * 1025}]},
        "at most 1024 characters",
    ),
    ("naive timestamp", {"ts": "2024-05-01T12:00:00"}, "timezone info"),
    ("not a timestamp", {"ts": "yesterday"}, "valid datetime"),
    ("exploration without trajectory", {"trajectory": None}, "must carry a trajectory"),
    ("exploration with threshold", {"threshold": 0.9}, "without a threshold"),
    ("inf latency", {"latency_ms": math.inf}, FINITE),
    ("negative latency", {"latency_ms": -1.0}, GE),
    ("load above 1", {"node_load": 1.01}, LE),
    ("negative policy version", {"policy_version": -1}, GE),
    ("unknown stop reason", {"stop_reason": "timeout"}, "'confident', 'budget' or"),
    ("unknown arm", {"arm": "shadow"}, "'production' or 'candidate'"),
    (
        "unknown length bucket",
        {"segment": {"task": "qa", "length_bucket": "xl", "tenant": "a"}},
        "'short', 'medium' or 'long'",
    ),
    (
        "task named global",
        {"segment": {"task": "global", "length_bucket": "short", "tenant": "a"}},
        "reserved",
    ),
    (
        "slash in tenant",
        {"segment": {"task": "qa", "length_bucket": "short", "tenant": "a/b"}},
        ID_PATTERN,
    ),
]


@pytest.mark.parametrize(("case", "change", "match"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_inference_event_bounds(case: str, change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(InferenceEvent, {**wire(inference_event()), **change})
    first = info.value.errors()[0]["msg"]  # the cause; pydantic may add consequences
    assert re.search(match, first), f"{case}: {info.value}"


def test_python_callers_get_the_same_bounds() -> None:
    data = inference_event().model_dump()
    cases: list[dict[str, Any]] = [
        {"confidence": math.nan},
        {"ts": datetime(2024, 5, 1, 12, 0)},  # noqa: DTZ001 - a naive datetime is the point
        {"tokens_generated": 257},
        {"request_id": ""},
    ]
    for change in cases:
        with pytest.raises(ValidationError):
            InferenceEvent.model_validate({**data, **change})


def test_json_nan_and_naive_datetime_are_refused_on_the_wire() -> None:
    raw = inference_event().to_bytes()
    with pytest.raises(ValidationError):
        InferenceEvent.from_bytes(raw.replace(b'"confidence":0.93', b'"confidence":NaN'))
    with pytest.raises(ValidationError, match="timezone"):
        InferenceEvent.from_bytes(raw.replace(b'12:00:00Z"', b'12:00:00"'))


def test_confident_stop_needs_a_threshold_it_reached() -> None:
    data = inference_event(exploration=False).model_dump()
    with pytest.raises(ValidationError, match="requires a threshold"):
        InferenceEvent.model_validate({**data, "threshold": None})
    with pytest.raises(ValidationError, match="confidence >= threshold"):
        InferenceEvent.model_validate({**data, "confidence": 0.5})


def test_segment_keys_fall_back_to_task_then_global() -> None:
    segment = Segment(task="qa", length_bucket="long", tenant="acme")
    assert segment.key() == "acme/qa/long"
    assert segment.ancestors() == ("acme/qa/long", "qa", "global")


# --- JSON Schema drift ----------------------------------------------------------


def test_committed_json_schemas_match_the_models(tmp_path: Path) -> None:
    written = export_all(tmp_path)
    hint = "JSON Schemas are stale: run `python -m schemas.export` and commit schemas/json/"
    committed = sorted(path.name for path in SCHEMA_DIR.glob("*.schema.json"))
    assert committed == sorted(path.name for path in written), hint
    for path in written:
        assert (SCHEMA_DIR / path.name).read_bytes() == path.read_bytes(), f"{path.name}: {hint}"


def test_export_check_reports_stale_files(tmp_path: Path) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "outcome.schema.json").write_text("{}\n")
    (tmp_path / "old.schema.json").write_text("{}\n")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    rendered = render_all()
    assert all(text.endswith("}\n") for text in rendered.values())
    assert json.loads(rendered["outcome.schema.json"])["additionalProperties"] is False


def test_schemas_import_nothing_from_pipeline() -> None:
    code = (
        "import sys, schemas, schemas.examples, schemas.export\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipeline'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", "schemas/ must not depend on pipeline/"
