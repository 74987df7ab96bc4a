"""Property: any InferenceEvent the contract admits survives the wire unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from schemas import MAX_TOKENS, Checkpoint, InferenceEvent, Segment, StopReason
from schemas._types import MAX_LATENCY_MS, MAX_UINT32

ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=128
)
parts = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(
    lambda part: part != "global"
)
unit = st.floats(0.0, 1.0)
# hypothesis takes naive bounds and attaches the zones itself
stamps = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from(ZONES),
)


@st.composite
def inference_events(draw: st.DrawFn) -> InferenceEvent:
    budget = draw(st.integers(1, MAX_TOKENS))
    generated = draw(st.integers(0, budget))
    exploration = draw(st.booleans())
    threshold = None if exploration else draw(st.none() | unit)
    reasons: list[StopReason] = ["natural_end"]
    if generated == budget:
        reasons.append("budget")
    if threshold is not None:
        reasons.append("confident")
    stop = draw(st.sampled_from(reasons))
    confidence = draw(st.floats(threshold, 1.0) if stop == "confident" else unit)
    trajectory = None
    if exploration or draw(st.booleans()):
        tokens = draw(st.lists(st.integers(0, generated), min_size=1, max_size=20, unique=True))
        points = [
            Checkpoint(tokens=t, confidence=draw(unit), answer=draw(st.text())) for t in tokens
        ]
        trajectory = tuple(sorted(points, key=lambda point: point.tokens))
    return InferenceEvent(
        event_id=draw(ids),
        request_id=draw(ids),
        node_id=draw(ids),
        model=draw(ids),
        ts=draw(stamps),
        segment=Segment(
            task=draw(parts),
            length_bucket=draw(st.sampled_from(["short", "medium", "long"])),
            tenant=draw(parts),
        ),
        policy_name=draw(ids),
        policy_version=draw(st.integers(0, MAX_UINT32)),
        threshold=threshold,
        arm=draw(st.sampled_from(["production", "candidate"])),
        exploration=exploration,
        tokens_prompt=draw(st.integers(0, MAX_TOKENS)),
        tokens_generated=generated,
        tokens_probe=draw(st.integers(0, MAX_TOKENS)),
        tokens_budget=budget,
        stop_reason=stop,
        confidence=confidence,
        answer=draw(st.text(max_size=300)),
        latency_ms=draw(st.floats(0.0, MAX_LATENCY_MS)),
        node_load=draw(unit),
        trajectory=trajectory,
    )


@given(inference_events())
def test_any_valid_inference_event_round_trips(event: InferenceEvent) -> None:
    assert InferenceEvent.from_bytes(event.to_bytes()) == event
    assert InferenceEvent.model_validate(event.model_dump()) == event
