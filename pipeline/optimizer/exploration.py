"""Where exploration is spent: a segment's own share, from its certificate (pure).

Exploration requests run to the natural end so their trajectories can be
replayed under every threshold. In a segment that serves no early stop yet
they cost only their confidence probes; in a segment whose certificate is
done growing they cost its savings and buy only change detection. So the
policy's share (``exploration_share``) applies wherever more samples could
certify more, ``exploration_floor`` where they could not, and
``exploration_ceiling`` where the policy serves no early stop at all (an
uncertified segment, one restarted after a change, a fallback key that is
off): there exploring is nearly free and every sample brings the
certificate closer.

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
    chains: Mapping[float, Curve] | None = None,
) -> float | None:
    """A key's own exploration share, or None for the policy's.

    The spec's ceiling where the key serves no early stop in any load mode
    (``decisions`` are the key's, one per mode). The floor where a segment's
    certificate is done growing: in every load mode it is served from its own
    certificate and the next threshold on its walk measures above that mode's
    epsilon, so more samples would not certify it. Everything else (pooled,
    a walk that more samples could extend, task and global keys that stop
    early) explores at the policy's share. A mode served a schedule is judged
    on its population's schedule chain (``chains``: the chain's counts by
    epsilon), the same way.
    """
    if not decisions:
        return None
    ceiling = spec.exploration_ceiling
    if ceiling is not None and all(d.threshold >= 1.0 for d in decisions):
        return ceiling if ceiling != spec.exploration_share else None
    floor = spec.exploration_floor
    if floor is None or key.count("/") != 2:
        return None
    curve = curves.get(key)
    if curve is None or curve.n == 0:
        return None
    signed = spec.risk.loss == "signed"
    for decision in decisions:
        if decision.population != key or not decision.certified:
            return None
        walked = curve
        if decision.schedule is not None:
            walked = (chains or {}).get(decision.epsilon, Curve.empty(curve.grid))
            if walked.n == 0:
                return None
        j = walked.grid.index(decision.proposed)
        if j > 0:
            losses = int(walked.losses[j - 1]) - (int(walked.gains[j - 1]) if signed else 0)
            if losses / walked.n <= decision.epsilon:
                return None
    return floor
