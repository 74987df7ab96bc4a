"""From a finished generation to the node's report: the segment and the ``InferenceEvent``.

Pure functions: the service calls them, the unit tests check them against
the contract's rules (``schemas/inference.py``) for every stop reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pipeline.node import RequestPlan
from pipeline.serve.engine import Generation
from pipeline.serve.protocol import Metadata
from schemas import InferenceEvent, Segment, length_bucket


def segment_of(metadata: Metadata, prompt_tokens: int, *, tenant: str, task: str) -> Segment:
    """The request's segment.

    Tenant and task come from ``metadata``, else the node's defaults; the
    length bucket from the prompt's token count (:func:`schemas.length_bucket`).
    """
    return Segment(
        tenant=metadata.tenant or tenant,
        task=metadata.task or task,
        length_bucket=length_bucket(prompt_tokens),
    )


def build_event(
    *,
    request_id: str,
    node_id: str,
    model: str,
    segment: Segment,
    plan: RequestPlan,
    generation: Generation,
    latency_ms: float,
    node_load: float,
    ts: datetime | None = None,
) -> InferenceEvent:
    """The event of one served request.

    The threshold is the plan's at the stop (None for exploration and before
    ``min_tokens``, 1.0 when early stopping is off); the trajectory is sent for
    exploration requests only.

    Raises:
        pydantic.ValidationError: the generation breaks the contract (a bug).
    """
    return InferenceEvent(
        event_id=uuid.uuid4().hex,
        request_id=request_id,
        node_id=node_id,
        ts=ts or datetime.now(UTC),
        model=model,
        segment=segment,
        policy_name=plan.policy_name,
        policy_version=plan.policy_version,
        threshold=None if plan.exploration else generation.threshold,
        arm=plan.arm,
        exploration=plan.exploration,
        tokens_prompt=generation.tokens_prompt,
        tokens_generated=generation.tokens_generated,
        tokens_probe=generation.tokens_probe,
        tokens_budget=generation.tokens_budget,
        stop_reason=generation.stop_reason,
        confidence=generation.confidence,
        answer=generation.answer[:4096],
        latency_ms=max(0.0, latency_ms),
        node_load=min(1.0, max(0.0, node_load)),
        trajectory=generation.trajectory if plan.exploration else None,
    )
