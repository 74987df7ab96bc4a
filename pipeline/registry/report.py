"""Rows for the review commands' tables (pure: plain strings, no rich, no MLflow)."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.registry import names
from pipeline.registry.compare import MODES
from schemas import PolicyBody

REVIEW_TAGS: tuple[str, ...] = (
    names.T_REVIEW_STATE,
    names.T_PROPOSED_AT,
    names.T_PROPOSAL_REASON,
    names.T_WHO,
    names.T_WHEN,
    names.T_WHY,
    names.T_APPROVED_BY,
    names.T_APPROVED_AT,
    names.T_APPROVE_REASON,
    names.T_REJECTED_BY,
    names.T_REJECTED_AT,
    names.T_REJECT_REASON,
    names.T_ROLLBACK_OF,
    names.T_RESTORES,
    names.T_ROLLED_BACK_BY,
    names.T_ROLLED_BACK_AT,
    names.T_ROLLBACK_REASON,
    names.T_REPLACED_BY,
    names.T_PUBLISHED_AT,
    names.T_PUBLISHED_CHECKSUM,
    names.T_POLICY_NAME,
    names.T_POLICY_SHA256,
)


def tag_rows(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    """Review tags first in a fixed order, then any others, sorted."""
    known = [(k, tags[k]) for k in REVIEW_TAGS if k in tags]
    rest = sorted((k, v) for k, v in tags.items() if k not in REVIEW_TAGS)
    return known + rest


def value_rows(
    values: Mapping[str, object], *, skip_segments: bool = False
) -> list[tuple[str, str]]:
    """Sorted ``(name, value)``; per-segment metrics left out when ``skip_segments``."""
    rows = []
    for key in sorted(values):
        if skip_segments and names.split_segment_metric(key) is not None:
            continue
        value = values[key]
        rows.append((key, f"{value:.6g}" if isinstance(value, float) else str(value)))
    return rows


def segment_rows(
    body: PolicyBody, metrics: Mapping[str, float]
) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the per-segment table: thresholds, limits, segment metrics.

    Metric columns are those logged by name :func:`names.segment_metric_name`
    for any segment of the policy; a segment without one shows ``-``.
    """
    per_segment: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        split = names.split_segment_metric(key)
        if split is not None:
            per_segment.setdefault(split[0], {})[split[1]] = value
    sanitized = {names.sanitize_name(s): s for s in body.segments}
    metric_names = sorted({m for s, ms in per_segment.items() if s in sanitized for m in ms})
    columns = ["segment", *MODES, "min_tokens", "token_budget", *metric_names]
    rows = []
    for key in sorted(body.segments):
        policy = body.segments[key]
        found = per_segment.get(names.sanitize_name(key), {})
        rows.append(
            [
                key,
                *(f"{policy.thresholds[m]:g}" if m in policy.thresholds else "-" for m in MODES),
                str(policy.min_tokens),
                str(policy.token_budget),
                *(f"{found[m]:.4g}" if m in found else "-" for m in metric_names),
            ]
        )
    return columns, rows
