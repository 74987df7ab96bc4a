"""Stable names for the message types: file names, topic metadata, CLI choices."""

from __future__ import annotations

from typing import Final

from schemas._base import Message
from schemas.control import PolicyAck, ThresholdUpdate
from schemas.deadletter import DeadLetter
from schemas.inference import InferenceEvent
from schemas.labels import EMLabel, UserFeedback
from schemas.outcome import Outcome

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    "inference_event": InferenceEvent,
    "em_label": EMLabel,
    "user_feedback": UserFeedback,
    "outcome": Outcome,
    "threshold_update": ThresholdUpdate,
    "policy_ack": PolicyAck,
    "dead_letter": DeadLetter,
}
"""Every top-level message, by its stable name. Names never change once used."""
