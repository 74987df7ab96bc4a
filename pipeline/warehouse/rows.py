"""Contract messages as warehouse rows: one mapping, shared by the sink and the tools.

Column names are spelled out next to the values so a schema change is one
edit here and one migration, and inserts never depend on column order.
"""

from __future__ import annotations

from typing import Any

from schemas.inference import InferenceEvent

INFERENCE_EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "request_id", "node_id", "ts", "model", "tenant", "task", "length_bucket",
    "policy_name", "policy_version", "threshold", "arm", "exploration", "tokens_prompt",
    "tokens_generated", "tokens_budget", "stop_reason", "confidence", "answer", "latency_ms",
    "node_load", "src_topic", "src_partition", "src_offset",
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
    ]  # fmt: skip
    return INFERENCE_EVENT_COLUMNS, row
