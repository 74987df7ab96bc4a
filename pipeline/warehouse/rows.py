"""Contract messages as warehouse rows: one mapping, shared by the sink and the tools.

Column names are spelled out next to the values so a schema change is one
edit here and one migration, and inserts never depend on column order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.deadletter import DeadLetter
from schemas.inference import InferenceEvent
from schemas.labels import UserFeedback
from schemas.outcome import Outcome

INFERENCE_EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "request_id", "node_id", "ts", "model", "tenant", "task", "length_bucket",
    "policy_name", "policy_version", "threshold", "arm", "exploration", "tokens_prompt",
    "tokens_generated", "tokens_budget", "stop_reason", "confidence", "answer", "latency_ms",
    "node_load", "src_topic", "src_partition", "src_offset", "tokens_probe",
)  # fmt: skip
"""The columns of ``inference_events`` a writer sets (``ingested_at`` defaults)."""


def inference_event_row(
    event: InferenceEvent, topic: str, partition: int, offset: int
) -> tuple[tuple[str, ...], list[Any]]:
    """The column names and values of one ``inference_events`` row.

    ``topic``, ``partition`` and ``offset`` say where the event was read, so a
    row can be traced back to its Kafka record.
    """
    seg = event.segment
    row: list[Any] = [
        event.event_id, event.request_id, event.node_id, event.ts, event.model,
        seg.tenant, seg.task, seg.length_bucket, event.policy_name, event.policy_version,
        event.threshold, event.arm, event.exploration, event.tokens_prompt,
        event.tokens_generated, event.tokens_budget, event.stop_reason, event.confidence,
        event.answer, event.latency_ms, event.node_load, topic, partition, offset,
        event.tokens_probe,
    ]  # fmt: skip
    return INFERENCE_EVENT_COLUMNS, row


OUTCOME_COLUMNS: tuple[str, ...] = (
    "request_id", "version", "event_id", "ts", "node_id", "model", "tenant", "task",
    "length_bucket", "policy_name", "policy_version", "threshold", "arm", "exploration",
    "tokens_prompt", "tokens_generated", "tokens_budget", "stop_reason", "confidence",
    "latency_ms", "node_load", "answer", "labeled", "em", "em_full", "checkpoints",
    "feedback_count", "negative_feedback", "joined_at", "src_topic", "src_partition", "src_offset",
    "tokens_probe", "prev",
)  # fmt: skip
"""The columns of ``outcomes`` a writer sets."""

Contribution = tuple[int, datetime, str, str, str, str, int, str, int, int, int, int, int, int]
"""What one outcome version adds to ``outcome_rollup_1m``, in the order of the
``outcomes.prev`` tuple: version, minute, tenant, task, length_bucket,
policy_name, policy_version, arm, labeled, em, tokens_generated,
tokens_budget, feedback_count, negative_feedback."""

NO_PREVIOUS: Contribution = (
    0,
    datetime(1970, 1, 1, tzinfo=UTC),
    "",
    "",
    "",
    "",
    0,
    "",
    0,
    0,
    0,
    0,
    0,
    0,
)
"""``prev`` of a request's first row: version 0 means nothing to subtract."""

CONTRIBUTION_SQL = (
    "(version, toDateTime(toStartOfMinute(ts), 'UTC'), toString(tenant), toString(task), "
    "toString(length_bucket), toString(policy_name), policy_version, toString(arm), "
    "toUInt8(labeled), toUInt8(ifNull(em, false)), tokens_generated, tokens_budget, "
    "feedback_count, negative_feedback)"
)
"""The same tuple computed from a stored ``outcomes`` row."""


def contribution(outcome: Outcome) -> Contribution:
    """The rollup contribution of one outcome version (see :data:`Contribution`)."""
    event = outcome.event
    seg = event.segment
    minute = event.ts.astimezone(UTC).replace(second=0, microsecond=0)
    return (
        outcome.version, minute, seg.tenant, seg.task, seg.length_bucket, event.policy_name,
        event.policy_version, event.arm, int(outcome.labeled), int(bool(outcome.em)),
        event.tokens_generated, event.tokens_budget, outcome.feedback_count,
        outcome.negative_feedback,
    )  # fmt: skip


TRAJECTORY_COLUMNS: tuple[str, ...] = (
    "request_id", "version", "idx", "ts", "model", "tenant", "task", "length_bucket",
    "policy_name", "policy_version", "arm", "tokens", "confidence", "answer", "em", "em_final",
    "em_full", "tokens_generated", "tokens_budget", "tokens_probe",
)  # fmt: skip
"""The columns of ``trajectory_points`` a writer sets."""

FEEDBACK_COLUMNS: tuple[str, ...] = (
    "feedback_id", "request_id", "ts", "kind", "rating", "correction",
    "src_topic", "src_partition", "src_offset",
)  # fmt: skip
"""The columns of ``user_feedback`` a writer sets."""

DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "source_topic", "partition", "offset", "error_kind", "error", "key", "raw_head",
    "raw_bytes", "ts", "worker_id",
)  # fmt: skip
"""The columns of ``dead_letters`` a writer sets."""

DEAD_LETTER_RAW_HEAD = 4096
"""Bytes of a dead letter's record kept in the warehouse; the topic keeps all of it."""


def outcome_row(
    outcome: Outcome, topic: str, partition: int, offset: int, prev: Contribution = NO_PREVIOUS
) -> list[Any]:
    """The values of one ``outcomes`` row, in :data:`OUTCOME_COLUMNS` order.

    ``prev`` is the contribution of the version this row replaces, which the
    rollup view subtracts.
    """
    event = outcome.event
    seg = event.segment
    points = len(event.trajectory) if event.trajectory else 0
    return [
        outcome.request_id, outcome.version, event.event_id, event.ts, event.node_id,
        event.model, seg.tenant, seg.task, seg.length_bucket, event.policy_name,
        event.policy_version, event.threshold, event.arm, event.exploration, event.tokens_prompt,
        event.tokens_generated, event.tokens_budget, event.stop_reason, event.confidence,
        event.latency_ms, event.node_load, event.answer, outcome.labeled, outcome.em,
        outcome.em_full, points, outcome.feedback_count, outcome.negative_feedback,
        outcome.joined_at, topic, partition, offset, event.tokens_probe, prev,
    ]  # fmt: skip


def trajectory_rows(outcome: Outcome) -> list[list[Any]]:
    """The ``trajectory_points`` rows of an outcome (none without a trajectory)."""
    event = outcome.event
    if not event.trajectory:
        return []
    seg = event.segment
    ems: tuple[bool | None, ...] = outcome.checkpoint_em or (None,) * len(event.trajectory)
    rows: list[list[Any]] = []
    for idx, (point, em) in enumerate(zip(event.trajectory, ems, strict=True)):
        rows.append([
            outcome.request_id, outcome.version, idx, event.ts, event.model, seg.tenant,
            seg.task, seg.length_bucket, event.policy_name, event.policy_version, event.arm,
            point.tokens, point.confidence, point.answer, em, outcome.em, outcome.em_full,
            event.tokens_generated, event.tokens_budget, event.tokens_probe,
        ])  # fmt: skip
    return rows


def feedback_row(feedback: UserFeedback, topic: str, partition: int, offset: int) -> list[Any]:
    """The values of one ``user_feedback`` row, in :data:`FEEDBACK_COLUMNS` order."""
    return [
        feedback.feedback_id, feedback.request_id, feedback.ts, feedback.kind, feedback.rating,
        feedback.correction, topic, partition, offset,
    ]  # fmt: skip


def dead_letter_row(letter: DeadLetter) -> list[Any]:
    """The values of one ``dead_letters`` row, in :data:`DEAD_LETTER_COLUMNS` order."""
    return [
        letter.source_topic, letter.partition, letter.offset, letter.error_kind, letter.error,
        letter.key, letter.raw[:DEAD_LETTER_RAW_HEAD], len(letter.raw), letter.ts,
        letter.worker_id,
    ]  # fmt: skip
