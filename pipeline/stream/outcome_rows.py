"""Warehouse rows straight from an outcome's JSON: the sink's trusted fast path.

Outcomes are produced by the joiner, which built them from inputs it had
validated against their contracts; validating every one again with pydantic
took a third of the sink's time (see BENCHMARKS.md, ADR 004). Here the JSON is
parsed once (pydantic-core, no model) and the rows are built from it, with a
structural check of every value that reaches ClickHouse: its Python type and,
for unsigned columns, its range, so a row that passes can never make the
insert fail. The rows equal what :mod:`pipeline.warehouse.rows` builds from
the validated :class:`~schemas.Outcome` (a unit test holds them to it).

Anything the check does not accept returns None: the caller then validates
with the contract, which either accepts the outcome (written as usual) or
says why not (the record is dead-lettered).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json

from pipeline.warehouse.rows import Contribution

_NONE = type(None)
_U16, _U32, _U64 = 2**16 - 1, 2**32 - 1, 2**64 - 1


def _row_types() -> frozenset[tuple[type, ...]]:
    # The Python types each outcomes column (but prev) accepts, expanded into
    # every combination: checking a row is then one lookup of its type tuple.
    s, i, t, b = (str,), (int,), (datetime,), (bool,)
    f = (float, int)
    columns: list[tuple[type, ...]] = [
        s, i, s, t, s, s, s, s, s, s, i, (float, int, _NONE), s, b, i, i, i, s, f, f, f, s, b,
        (bool, _NONE), (bool, _NONE), i, i, i, t, s, i, i, i,
    ]  # fmt: skip
    return frozenset(itertools.product(*columns))


_ROW_TYPES = _row_types()
# Unsigned integer columns by bound (indices into the row).
_U16_AT, _U32_AT, _U64_AT = (25, 30), (14, 15, 16, 32), (1, 10, 26, 27, 31)


@dataclass(frozen=True, slots=True)
class OutcomeRows:
    """One outcome as rows: its ``outcomes`` row (without ``prev``) and trajectory rows."""

    request_id: str
    version: int
    row: list[Any]
    """The values of :data:`~pipeline.warehouse.rows.OUTCOME_COLUMNS` but the last (``prev``)."""
    points: list[list[Any]]
    contribution: Contribution


def _ts(value: Any) -> datetime:
    if type(value) is not str:
        raise TypeError(value)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(value)  # the contract refuses naive timestamps
    return parsed.astimezone(UTC)


def _fits(r: list[Any]) -> bool:
    # Indices spelled out (see _U16_AT, _U32_AT, _U64_AT): chained comparisons,
    # no intermediate lists, on every outcome the sink reads.
    return tuple(map(type, r)) in _ROW_TYPES and (
        0 <= r[25] <= _U16 and 0 <= r[30] <= _U16
        and 0 <= r[14] <= _U32 and 0 <= r[15] <= _U32 and 0 <= r[16] <= _U32 and 0 <= r[32] <= _U32
        and 0 <= r[1] <= _U64 and 0 <= r[10] <= _U64 and 0 <= r[26] <= _U64
        and 0 <= r[27] <= _U64 and 0 <= r[31] <= _U64
    )  # fmt: skip


def outcome_rows(raw: bytes, topic: str, partition: int, offset: int) -> OutcomeRows | None:
    """The rows of one outcome record, or None when it needs the full contract check."""
    try:
        return _build(from_json(raw), topic, partition, offset)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def _build(doc: Any, topic: str, partition: int, offset: int) -> OutcomeRows | None:
    event = doc["event"]
    seg = event["segment"]
    rid = doc["request_id"]
    if doc["schema_version"] != 1 or event["schema_version"] != 1 or rid != event["request_id"]:
        return None
    ts = _ts(event["ts"])
    labeled, em, em_full = doc["labeled"], doc["em"], doc["em_full"]
    if not labeled and (em is not None or em_full is not None or doc["checkpoint_em"] is not None):
        return None
    if labeled and em is None:
        return None
    trajectory = event["trajectory"]
    if trajectory is not None and not trajectory:
        return None
    version = doc["version"]
    tokens_generated, tokens_budget = event["tokens_generated"], event["tokens_budget"]
    feedback_count, negative = doc["feedback_count"], doc["negative_feedback"]
    row: list[Any] = [
        rid, version, event["event_id"], ts, event["node_id"], event["model"], seg["tenant"],
        seg["task"], seg["length_bucket"], event["policy_name"], event["policy_version"],
        event["threshold"], event["arm"], event["exploration"], event["tokens_prompt"],
        tokens_generated, tokens_budget, event["stop_reason"], event["confidence"],
        event["latency_ms"], event["node_load"], event["answer"], labeled, em, em_full,
        len(trajectory) if trajectory else 0, feedback_count, negative, _ts(doc["joined_at"]),
        topic, partition, offset, event.get("tokens_probe", 0),
    ]  # fmt: skip
    if not _fits(row) or version < 1 or negative > feedback_count:
        return None
    points = _points(doc, row, trajectory) if trajectory else []
    if points is None:
        return None
    minute = ts.replace(second=0, microsecond=0)
    contribution: Contribution = (
        version, minute, row[6], row[7], row[8], row[9], row[10], row[12], int(labeled),
        int(bool(em)), tokens_generated, tokens_budget, feedback_count, negative,
    )  # fmt: skip
    return OutcomeRows(rid, version, row, points, contribution)


def _points(doc: Any, row: list[Any], trajectory: Any) -> list[list[Any]] | None:
    if type(trajectory) is not list:
        return None
    ems = doc["checkpoint_em"]
    if ems is None:
        ems = [None] * len(trajectory)
    elif type(ems) is not list or len(ems) != len(trajectory) or not row[22]:
        return None
    rid, version, ts, model, tenant, task, bucket, name, pversion, arm = (
        row[0], row[1], row[3], row[5], row[6], row[7], row[8], row[9], row[10], row[12],
    )  # fmt: skip
    em, em_full, generated, budget, probe = row[23], row[24], row[15], row[16], row[32]
    points: list[list[Any]] = []
    for idx, (point, point_em) in enumerate(zip(trajectory, ems, strict=True)):
        tokens, confidence, answer = point["tokens"], point["confidence"], point["answer"]
        if (
            type(tokens) is not int
            or not 0 <= tokens <= _U32
            or type(confidence) not in (float, int)
            or type(answer) is not str
            or type(point_em) not in (bool, _NONE)
        ):
            return None
        points.append([
            rid, version, idx, ts, model, tenant, task, bucket, name, pversion, arm, tokens,
            confidence, answer, point_em, em, em_full, generated, budget, probe,
        ])  # fmt: skip
    return points
