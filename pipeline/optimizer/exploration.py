"""Where exploration is spent: a segment's own share, from its certificate (pure).

Exploration requests run to the natural end so their trajectories can be
replayed under every threshold. In a segment that serves no early stop yet
they cost only their confidence probes; in a segment whose certificate is
done growing they cost its savings and buy only change detection. So the
policy's share (``exploration_share``) applies wherever more samples could
certify more, and ``exploration_floor`` where they could not.

Pooled certificates (a task, ``global``) see their segments' exploration
samples, so with per-segment shares their mixture weights a segment by its
traffic times its share: the pooled promise is about that mixture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.optimizer.curve import Curve
from pipeline.optimizer.proposal import SegmentDecision
from pipeline.optimizer.spec import PolicySpec


def exploration_for(
    spec: PolicySpec,
    key: str,
    decisions: Sequence[SegmentDecision],
    curves: Mapping[str, Curve],
) -> float | None:
    """A segment's own exploration share: the spec's floor once its certificate is done growing.

    Done growing: in every load mode the segment is served from its own
    certificate and the next threshold on its walk measures above that
    mode's epsilon, so more samples would not certify it. Everything else
    (pooled, uncertified, a walk that more samples could extend, task and
    global keys) explores at the policy's share (None). An uncertified
    segment serves full generations anyway, so its exploration costs only
    the probes.
    """
    floor = spec.exploration_floor
    if floor is None or key.count("/") != 2 or not decisions:
        return None
    curve = curves.get(key)
    if curve is None or curve.n == 0:
        return None
    signed = spec.risk.loss == "signed"
    for decision in decisions:
        if decision.population != key or not decision.certified:
            return None
        j = curve.grid.index(decision.proposed)
        if j > 0:
            losses = int(curve.losses[j - 1]) - (int(curve.gains[j - 1]) if signed else 0)
            if losses / curve.n <= decision.epsilon:
                return None
    return floor
