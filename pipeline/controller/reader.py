"""The optimizer's thin ClickHouse reader: exploration batches and paired canary observations.

The client is passed in (``pipeline.warehouse.client.connect``), so this
module imports no ClickHouse library and its pure halves
(:func:`batches_from_rows`, :func:`pair_arms`) are unit-tested without one.

Exploration: labeled exploration outcomes of one policy in a time window
(and, with ``risk.unlabeled: disagreement``, unlabeled ones through
:func:`disagreement_rows`),
their checkpoints read from ``trajectory_points FINAL`` (latest version of
every request) and packed into one :class:`ExplorationBatch` per
``tenant/task/length_bucket`` key. A negative verdict (a label without gold
answers saying the final answer is wrong) leaves the checkpoints unknown: such
a request counts with every trial answer wrong, so its loss is 0 under every
threshold, an upper bound of its true signed loss (dropping it instead would
drop exactly the requests that can only count in favour). Any other request
whose checkpoints are not all labeled is dropped.

Canary: canary and production requests of the same segment and minute, made
in one closed interval of request time, are paired by arrival order (``ts``,
then ``request_id``), never by outcome, so the pairs are what
:mod:`pipeline.optimizer.sequential` assumes: each pair is a canary and a
production request drawn from the same traffic. EM pairs use labeled requests
only (labels arrive independently of correctness); tokens and negative
feedback use every request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.optimizer.curve import ExplorationBatch, probe_cost
from pipeline.optimizer.spec import Unlabeled
from pipeline.stream.em import normalize_answer

Item = tuple[list[int], list[float], list[bool], bool, int, float | None, int]
"""One request: tokens, confidences and trial-answer EM per checkpoint, full EM,
full tokens, request time (or None), tokens one probe cost."""

_EXPLORATION_SQL = """
SELECT t.tenant, t.task, t.length_bucket, t.request_id, t.idx, t.tokens, t.confidence,
       t.em, o.em, o.tokens_generated, o.tokens_probe, o.model, o.ts
FROM trajectory_points AS t FINAL
INNER JOIN (
    SELECT request_id, em, tokens_generated, tokens_probe, model, ts
    FROM outcomes FINAL
    WHERE policy_name = {policy:String} AND exploration AND labeled AND em IS NOT NULL
      AND ts >= {since:DateTime64(3, 'UTC')}
) AS o ON o.request_id = t.request_id
WHERE t.policy_name = {policy:String}
ORDER BY t.request_id, t.idx
"""

# The same rows in request order, for the anytime certificates: a half-open
# interval of request time, so consecutive cycles read each request once.
_NEW_EXPLORATION_SQL = """
SELECT t.tenant, t.task, t.length_bucket, t.request_id, t.idx, t.tokens, t.confidence,
       t.em, o.em, o.tokens_generated, o.tokens_probe, o.ts
FROM trajectory_points AS t FINAL
INNER JOIN (
    SELECT request_id, em, tokens_generated, tokens_probe, ts
    FROM outcomes FINAL
    WHERE policy_name = {policy:String} AND exploration AND labeled AND em IS NOT NULL
      AND ts > {after:DateTime64(3, 'UTC')} AND ts <= {until:DateTime64(3, 'UTC')}
) AS o ON o.request_id = t.request_id
WHERE t.policy_name = {policy:String}
ORDER BY o.ts, t.request_id, t.idx
"""

# Exploration requests still unlabeled when read: every checkpoint's trial answer and
# the full answer, for the disagreement bound (risk.unlabeled: disagreement).
_UNLABELED_SQL = """
SELECT t.tenant, t.task, t.length_bucket, t.request_id, t.idx, t.tokens, t.confidence,
       t.answer, o.answer, o.tokens_generated, o.tokens_probe, o.model, o.ts
FROM trajectory_points AS t FINAL
INNER JOIN (
    SELECT request_id, answer, tokens_generated, tokens_probe, model, ts
    FROM outcomes FINAL
    WHERE policy_name = {policy:String} AND exploration AND NOT labeled
      AND ts > {after:DateTime64(3, 'UTC')} AND ts <= {until:DateTime64(3, 'UTC')}
) AS o ON o.request_id = t.request_id
WHERE t.policy_name = {policy:String}
ORDER BY o.ts, t.request_id, t.idx
"""

_CANARY_SQL = """
SELECT tenant, task, length_bucket, toStartOfMinute(ts) AS minute, arm, ts, request_id,
       labeled, em, tokens_generated / tokens_budget, negative_feedback > 0
FROM outcomes FINAL
WHERE policy_name = {policy:String} AND NOT exploration
  AND ts > {after:DateTime64(3, 'UTC')} AND ts <= {until:DateTime64(3, 'UTC')}
  AND ((arm = 'candidate' AND policy_version = {candidate:UInt64})
    OR (arm = 'production' AND policy_version = {production:UInt64}))
ORDER BY minute, tenant, task, length_bucket, ts, request_id
"""


def batches_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, ExplorationBatch]:
    """Pack exploration rows, sorted by request and checkpoint, into one ExplorationBatch per key.

    A row is ``(tenant, task, bucket, request_id, idx, tokens, confidence, em,
    full_em, full_tokens)``, optionally followed by the request's probe tokens
    (its total; one probe costs that over its checkpoints) and then the request
    time (a datetime), which becomes the batch's ``arrival``.
    """
    per_key: dict[str, list[Item]] = {}
    current: str | None = None
    tokens: list[int] = []
    conf: list[float] = []
    correct: list[bool | None] = []
    head: tuple[str, bool, int, float | None, int] = ("", False, 0, None, 0)

    def flush() -> None:
        if current is None or not tokens:
            return
        key, full_em, full_tokens, arrival, probe_total = head
        if any(c is None for c in correct) and full_em:
            return
        # A stored trajectory may not reach the end; the end is never an early stop.
        full = max(full_tokens, tokens[-1])
        flags = [bool(c) for c in correct]  # unknown (None) after a negative verdict: wrong
        probe = probe_cost(probe_total, len(tokens))
        per_key.setdefault(key, []).append((tokens, conf, flags, full_em, full, arrival, probe))

    for row in rows:
        tenant, task, bucket, request_id, _idx, tok, confidence, em, full_em, full_tokens = row[:10]
        if request_id != current:
            flush()
            current, tokens, conf, correct = request_id, [], [], []
            probe_total = int(row[10]) if len(row) > 10 else 0
            arrival = row[11].timestamp() if len(row) > 11 else None
            key = f"{tenant}/{task}/{bucket}"
            head = (key, bool(full_em), int(full_tokens), arrival, probe_total)
        tokens.append(int(tok))
        conf.append(min(max(float(confidence), 0.0), 1.0))  # Float32 storage may overshoot 1.0
        correct.append(None if em is None else bool(em))
    flush()
    return {key: _pack(items) for key, items in sorted(per_key.items())}


def newest_model_only(rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    """Keep, per segment key, the rows of the model that served its newest request.

    A row is ``(tenant, task, bucket, request_id, idx, tokens, confidence, em,
    full_em, full_tokens, tokens_probe, model, ts)``; the result drops ``model``
    and ``ts``, ready for :func:`batches_from_rows`, in the same order.
    """
    rows = list(rows)
    newest: dict[tuple[Any, Any, Any], tuple[Any, Any]] = {}
    for row in rows:
        key, model, ts = (row[0], row[1], row[2]), row[11], row[12]
        seen = newest.get(key)
        if seen is None or ts > seen[1] or (ts == seen[1] and model > seen[0]):
            newest[key] = (model, ts)
    return [row[:11] for row in rows if newest[row[0], row[1], row[2]][0] == row[11]]


def _pack(items: list[Item]) -> ExplorationBatch:
    k = max(len(t[0]) for t in items)
    n = len(items)
    tokens = np.zeros((n, k), dtype=np.int64)
    confidence = np.zeros((n, k), dtype=np.float64)
    correct = np.zeros((n, k), dtype=np.bool_)
    length = np.zeros(n, dtype=np.int64)
    for i, (tok, conf, flags, _, _, _, _) in enumerate(items):
        m = len(tok)
        tokens[i, :m], confidence[i, :m], correct[i, :m], length[i] = tok, conf, flags, m
    return ExplorationBatch(
        tokens=tokens,
        confidence=confidence,
        correct=correct,
        length=length,
        full_tokens=np.array([t[4] for t in items], dtype=np.int64),
        full_correct=np.array([t[3] for t in items], dtype=np.bool_),
        arrival=(
            np.array([t[5] for t in items], dtype=np.float64)
            if all(t[5] is not None for t in items)
            else None
        ),
        probe_tokens=(
            np.array([t[6] for t in items], dtype=np.int64) if any(t[6] for t in items) else None
        ),
    )


def disagreement_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows of unlabeled requests, made into labeled rows by the disagreement bound.

    A row is ``(tenant, task, bucket, request_id, idx, tokens, confidence,
    answer, full_answer, full_tokens, tokens_probe, model, ts)``; the result
    has the labeled rows' shape, with ``em`` = the trial answer equals the full
    answer after EM normalisation and ``full_em`` = True. Per request, 1 -
    early EM so defined is at least its true signed or one-sided EM loss,
    whatever the gold answer: the certificates stay valid, only more cautious.
    """
    out: list[tuple[Any, ...]] = []
    for row in rows:
        tenant, task, bucket, request_id, idx, tok, conf, answer, full = row[:9]
        same = normalize_answer(str(answer)) == normalize_answer(str(full))
        out.append((tenant, task, bucket, request_id, idx, tok, conf, same, True, *row[9:]))
    return out


def read_exploration(
    client: Any,
    policy_name: str,
    since: datetime,
    *,
    unlabeled: Unlabeled = "skip",
    until: datetime | None = None,
) -> dict[str, ExplorationBatch]:
    """Exploration samples of ``policy_name`` since ``since``, by segment key.

    Labeled requests always; unlabeled ones made up to ``until`` too with
    ``unlabeled="disagreement"`` (:func:`disagreement_rows`).
    """
    result = client.query(_EXPLORATION_SQL, parameters={"policy": policy_name, "since": since})
    rows = list(result.result_rows)
    if unlabeled == "disagreement":
        params = {"policy": policy_name, "after": since, "until": until or datetime.now(UTC)}
        extra = disagreement_rows(client.query(_UNLABELED_SQL, parameters=params).result_rows)
        rows = sorted([*rows, *extra], key=lambda r: (r[3], r[4]))
    return batches_from_rows(newest_model_only(rows))


def read_new_exploration(
    client: Any,
    policy_name: str,
    after: datetime,
    until: datetime,
    *,
    unlabeled: Unlabeled = "skip",
) -> dict[str, ExplorationBatch]:
    """Exploration samples of requests made in ``(after, until]``, in request order.

    Labeled requests always; unlabeled ones too with ``unlabeled="disagreement"``
    (:func:`disagreement_rows`). Each request is read once: one whose label
    comes later keeps the bound it was read with.
    """
    params = {"policy": policy_name, "after": after, "until": until}
    rows = list(client.query(_NEW_EXPLORATION_SQL, parameters=params).result_rows)
    if unlabeled == "disagreement":
        extra = disagreement_rows(client.query(_UNLABELED_SQL, parameters=params).result_rows)
        # Drop model (index 11): the labeled rows of this query end with the request time.
        rows = sorted([*rows, *(r[:11] + r[12:] for r in extra)], key=lambda r: (r[11], r[3], r[4]))
    return batches_from_rows(rows)


@dataclass(frozen=True, slots=True)
class Observation:
    """One served, non-exploration request of either arm, as the guardrails see it."""

    bucket: tuple[str, ...]
    """Pairing bucket: segment key and minute; pairs never cross buckets."""
    arm: str
    labeled: bool
    em: bool | None
    tokens_share: float
    negative: bool


@dataclass(frozen=True, slots=True)
class Paired:
    """``(canary, production)`` value sequences per metric, paired by position."""

    em: tuple[tuple[float, ...], tuple[float, ...]]
    tokens: tuple[tuple[float, ...], tuple[float, ...]]
    negative_feedback: tuple[tuple[float, ...], tuple[float, ...]]

    @property
    def em_pairs(self) -> int:
        """Labeled pairs (what gates a promotion)."""
        return len(self.em[0])


def _zip_buckets(
    observations: Sequence[Observation], pick: Any
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    canary: dict[tuple[str, ...], list[float]] = {}
    production: dict[tuple[str, ...], list[float]] = {}
    order: list[tuple[str, ...]] = []
    for o in observations:
        value = pick(o)
        if value is None:
            continue
        if o.bucket not in canary:
            order.append(o.bucket)
            canary[o.bucket], production[o.bucket] = [], []
        (canary if o.arm == "candidate" else production)[o.bucket].append(float(value))
    c_out: list[float] = []
    p_out: list[float] = []
    for bucket in order:  # buckets in arrival order: the sequence grows at its end
        n = min(len(canary[bucket]), len(production[bucket]))
        c_out += canary[bucket][:n]
        p_out += production[bucket][:n]
    return tuple(c_out), tuple(p_out)


def pair_arms(observations: Sequence[Observation]) -> Paired:
    """Pair the i-th canary with the i-th production request of each bucket, per metric.

    ``observations`` must be in arrival order. Unpaired leftovers of a bucket
    are dropped; which requests pair never depends on their outcomes.
    """
    return Paired(
        em=_zip_buckets(observations, lambda o: o.em if o.labeled else None),
        tokens=_zip_buckets(observations, lambda o: o.tokens_share),
        negative_feedback=_zip_buckets(observations, lambda o: o.negative),
    )


def read_canary(
    client: Any,
    policy_name: str,
    *,
    production: int,
    candidate: int,
    after: datetime,
    until: datetime,
) -> Paired:
    """Paired observations of requests made in ``(after, until]`` (one closed interval).

    ``candidate`` is the canary's version and ``production`` the version carrying
    it, so both arms ran at the same time. Labels and feedback are those stored
    now; the monitor calls this once per interval (see ``canary_ledger``).
    """
    result = client.query(
        _CANARY_SQL,
        parameters={
            "policy": policy_name,
            "after": after,
            "until": until,
            "candidate": candidate,
            "production": production,
        },
    )
    observations = [
        Observation(
            bucket=(str(tenant), str(task), str(bucket), str(minute)),
            arm=str(arm),
            labeled=bool(labeled),
            em=None if em is None else bool(em),
            tokens_share=min(max(float(share), 0.0), 1.0),
            negative=bool(negative),
        )
        for tenant, task, bucket, minute, arm, _ts, _rid, labeled, em, share, negative in (
            result.result_rows
        )
    ]
    return pair_arms(observations)
