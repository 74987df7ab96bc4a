"""One valid instance of every message, for documentation and tests.

The values are fixed, so the examples are equal on every call and their
bytes are stable.
"""

from __future__ import annotations

from datetime import UTC, datetime

from schemas._base import Message
from schemas.control import PolicyAck, ThresholdUpdate
from schemas.deadletter import DeadLetter
from schemas.inference import Checkpoint, InferenceEvent, Segment
from schemas.labels import EMLabel, UserFeedback
from schemas.outcome import Outcome
from schemas.policy import PolicyBody, SegmentPolicy

EXAMPLE_TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EXAMPLE_HMAC_KEY = b"example-key-not-a-secret"


def inference_event(*, exploration: bool = True) -> InferenceEvent:
    """Return an exploration request run to its natural end, or a confident stop."""
    trajectory = (
        Checkpoint(tokens=16, confidence=0.41, answer="Paris, France"),
        Checkpoint(tokens=32, confidence=0.87, answer="Paris"),
        Checkpoint(tokens=57, confidence=0.93, answer="Paris"),
    )
    return InferenceEvent(
        event_id="evt-0001",
        request_id="req-0001",
        node_id="node-a",
        ts=EXAMPLE_TS,
        model="llama-3-8b@r1",
        segment=Segment(task="qa", length_bucket="short", tenant="acme"),
        policy_name="default",
        policy_version=3,
        threshold=None if exploration else 0.85,
        arm="production",
        exploration=exploration,
        tokens_prompt=120,
        tokens_generated=57 if exploration else 32,
        tokens_budget=256,
        stop_reason="natural_end" if exploration else "confident",
        confidence=0.93 if exploration else 0.87,
        answer="Paris",
        latency_ms=812.5,
        node_load=0.42,
        trajectory=trajectory if exploration else None,
    )


def policy_body() -> PolicyBody:
    """Return a policy with a global default, a task and a segment override, and a canary."""
    default = SegmentPolicy(
        thresholds={"offpeak": 0.95, "normal": 0.9, "peak": 0.8},
        min_tokens=8,
        token_budget=512,
    )
    qa = SegmentPolicy(
        thresholds={"normal": 0.85},
        min_tokens=4,
        token_budget=256,
        schedule=((64, 0.8), (128, 0.75)),
    )
    return PolicyBody(
        segments={"global": default, "qa": qa, "acme/qa/short": qa},
        exploration_share=0.02,
        canary_share=0.1,
        candidate_version=4,
        candidate_segments={"global": default},
    )


def threshold_update() -> ThresholdUpdate:
    """Return an HMAC-signed update (key :data:`EXAMPLE_HMAC_KEY`)."""
    return ThresholdUpdate.sign_hmac(
        policy_name="default",
        version=4,
        created_at=EXAMPLE_TS,
        body=policy_body(),
        key=EXAMPLE_HMAC_KEY,
        signing_key_id="example-2024-05",
    )


def example_messages() -> dict[str, Message]:
    """Return one valid message per name in :data:`schemas.registry.MESSAGE_TYPES`."""
    event = inference_event()
    return {
        "inference_event": event,
        "em_label": EMLabel(
            label_id="lbl-0001",
            request_id=event.request_id,
            labeler_id="annotator-7",
            ts=EXAMPLE_TS,
            gold_answers=("Paris", "Paris, France"),
        ),
        "user_feedback": UserFeedback(
            feedback_id="fb-0001",
            request_id=event.request_id,
            ts=EXAMPLE_TS,
            kind="correction",
            rating=-1,
            correction="Paris, the capital of France",
        ),
        "outcome": Outcome(
            request_id=event.request_id,
            event=event,
            labeled=True,
            em=True,
            em_full=True,
            checkpoint_em=(False, True, True),
            feedback_count=1,
            negative_feedback=1,
            version=2,
            joined_at=EXAMPLE_TS,
        ),
        "threshold_update": threshold_update(),
        "policy_ack": PolicyAck(
            node_id="node-a",
            policy_name="default",
            version=4,
            ts=EXAMPLE_TS,
            status="applied",
            applied_at=EXAMPLE_TS,
        ),
        "dead_letter": DeadLetter(
            source_topic="inference-events",
            partition=3,
            offset=1042,
            key=b"req-0002",
            raw=b"\x00\xff{not json",
            error="Invalid JSON: expected value at line 1 column 1",
            error_kind="decode",
            ts=EXAMPLE_TS,
            worker_id="joiner-1",
        ),
    }
