"""A first policy from a file of labeled trajectories: the cold start (pure).

``pipeline calibrate`` turns :class:`~schemas.TrajectoryRecord` lines (requests
run to their natural end) into exploration samples and certifies them with the
controller's selection (:func:`~pipeline.optimizer.select.optimize`), in one look:

- Keys: the record's segment, short keys mapped by
  :func:`schemas.trajectory.segment_from_key`; rows keep file order, and pooled
  populations interleave their segments by a seeded shuffle (``certify.py``).
- EM: SQuAD normalisation (:mod:`pipeline.stream.em`) of each checkpoint's
  trial answer against the gold answers; the full generation's is ``final_answer``.
- No step limit (:func:`calibration_spec`): no policy is in force yet. Offline
  data has no load modes: each mode gets the rule certified at its epsilon.
- ``min_tokens`` candidates (:func:`calibrate` ``min_tokens=``): one chain of
  tests per candidate at ``delta / candidates`` (Bonferroni), all on the same
  rows; each key takes the candidate whose normal-mode rule saves most net of
  probes, and every mode of the key takes that candidate's rules (a segment
  has one ``min_tokens``). By the union bound every chain's certificates hold
  at once with probability at least ``1 - delta``, so any choice among them
  keeps the promise.
- Probe cost: each record's ``probe_tokens`` goes with its row, and the curve
  code charges it as the node spends it (:func:`~pipeline.optimizer.curve.evaluate`:
  a probe at every checkpoint from ``min_tokens`` on until the stop, none when
  the rule is off), so savings are net of probes and the optimizer deploys the
  certified threshold that saves most net of them (off when all lose tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import takewhile
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipeline.optimizer.curve import (
    Curve,
    ExplorationBatch,
    Trajectory,
    evaluate,
)
from pipeline.optimizer.errors import OptimizerError
from pipeline.optimizer.proposal import Guarantee, Proposal, SegmentDecision
from pipeline.optimizer.select import MODES, optimize
from pipeline.optimizer.spec import PolicySpec, parse_spec
from pipeline.stream.em import checkpoint_em, exact_match
from schemas import LoadMode, PolicyBody, segment_ancestors
from schemas.trajectory import TrajectoryRecord, segment_from_key


def leaf_key(record: TrajectoryRecord) -> str:
    """The record's ``tenant/task/length_bucket`` key, short keys mapped."""
    segment = record.segment_value()
    return f"{segment.tenant}/{segment.task}/{segment.length_bucket}"


def trajectory_from_record(record: TrajectoryRecord) -> Trajectory:
    """The optimizer's view of one record: tokens, confidences, EM per checkpoint, full EM."""
    points = record.checkpoints
    return Trajectory(
        tokens=tuple(p.tokens for p in points),
        confidence=tuple(p.confidence for p in points),
        correct=checkpoint_em([p.answer for p in points], record.gold),
        full_correct=exact_match(record.final_answer, record.gold),
        full_tokens=record.tokens_full,
        probe_tokens=record.probe_tokens,
    )


@dataclass(frozen=True, slots=True, eq=False)
class OfflineSamples:
    """A file's trajectories as exploration batches (probe cost per row), rows in file order.

    Attributes:
        batches: One batch per ``tenant/task/length_bucket`` key, keys sorted.
    """

    batches: dict[str, ExplorationBatch]

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches.values())

    def members(self, key: str) -> list[str]:
        """The keys whose rows ``key`` (a key, a task or ``global``) pools, sorted."""
        return sorted(k for k in self.batches if key in segment_ancestors(k))

    def curve(self, spec: PolicySpec, key: str, *, probes: bool = True) -> Curve:
        """The rows ``key`` pools, on the spec's grid (``probes=False``: generated tokens only)."""
        total = Curve.empty(spec.thresholds())
        for leaf in self.members(key):
            batch = self.batches[leaf] if probes else replace(self.batches[leaf], probe_tokens=None)
            settings = spec.settings_for(leaf)
            total += evaluate(batch, total.grid, settings.min_tokens, settings.token_budget)
        return total


def samples_from_records(records: Iterable[TrajectoryRecord]) -> OfflineSamples:
    """Group records by key (sorted) and pack each group, in the records' order."""
    rows: dict[str, list[TrajectoryRecord]] = {}
    for record in records:
        rows.setdefault(leaf_key(record), []).append(record)
    return OfflineSamples(
        {
            k: ExplorationBatch.from_trajectories(map(trajectory_from_record, g))
            for k, g in sorted(rows.items())
        }
    )


def calibration_spec(
    spec: PolicySpec,
    *,
    epsilon: float | None = None,
    delta: float | None = None,
    min_tokens: int | None = None,
    min_samples: int | None = None,
    method: str | None = None,
) -> PolicySpec:
    """``spec`` for a cold start: the step limit lifted, and the given values overriding it.

    ``method`` replaces the spec's ``risk.method``: ``ltt`` (one look) suits a
    file that is looked at once; ``anytime`` pays for validity at every look,
    which an offline calibration does not need (it certifies far less at small n).
    ``ltt`` tests the one-sided loss (exact binomial; it bounds the signed drop
    from above, so its certificate holds for the signed drop too); ``signed``
    tests the signed drop itself with paired exact bounds of the loss and gain
    rates (:func:`pipeline.optimizer.ltt.signed_p_value`): stronger when early
    answers often fix wrong full ones, a little weaker when they seldom do.

    ``epsilon`` replaces every load mode's and drops the tolerance overrides
    (one epsilon everywhere); ``min_tokens`` replaces every settings entry's.

    Raises:
        SpecError: if an overriding value is out of the spec's bounds.
    """
    data = spec.model_dump(mode="json")
    data["max_step"] = 1.0
    if epsilon is not None:
        data["load_modes"] = {mode: {"epsilon": epsilon} for mode in MODES}
        data["tolerance"] = {"tenants": {}, "segments": {}}
    if delta is not None:
        data["risk"]["delta"] = delta
    if method == "signed":  # one look at the signed loss (paired exact bounds)
        data["risk"] = {**data["risk"], "method": "ltt", "loss": "signed"}
    elif method == "ltt":  # plain Learn-then-Test: the one-sided loss bounds the signed one
        data["risk"] = {**data["risk"], "method": "ltt", "loss": "one_sided"}
    elif method is not None:
        data["risk"]["method"] = method
    if min_tokens is not None:
        for settings in data["segments"]["settings"].values():
            settings["min_tokens"] = min_tokens
    if min_samples is not None:
        data["min_samples"] = min_samples
    return parse_spec(data, source=f"{spec.name} with the calibration options")


class CalibrationResult(BaseModel):
    """The rule of one policy key in one load mode, its certificate and what it saves.

    Savings and the EM drop are measured on the key's own rows (a task or
    ``global`` pools its segments); the certificate is on ``population``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    key: str
    mode: LoadMode
    threshold: float
    """The rule's threshold; 1.0 is off (never stops early)."""
    min_tokens: int
    """No early stop before this many tokens."""
    certified: bool
    """Whether the rule stops early under a certificate (False when it is off)."""
    most_aggressive: float
    """The lowest certified threshold (1.0 when none is)."""
    population: str | None
    """Whose rows were certified: the key itself, a parent, or None (too few samples)."""
    guarantee: Guarantee
    epsilon: float
    delta: float
    samples: int
    """The key's own rows."""
    population_samples: int
    saving: float
    """Expected share of full-generation tokens saved, net of probe tokens."""
    gross_saving: float
    """The same share counting generated tokens only."""
    em_drop: float
    """Empirical mean signed EM drop (full EM minus served EM) at ``threshold``."""
    em_drop_bound: float
    """The decision's bound on the mean EM drop (anytime: epsilon once certified; ltt: the
    one-look Clopper-Pearson bound), 0 when the rule is off."""
    full_em: float
    """EM of the full generations of the key's rows."""
    note: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class Calibration:
    """What :func:`calibrate` certified.

    Attributes:
        spec: The spec it ran under (overrides applied).
        results: Per policy key and load mode.
        body: The policy to publish.
        proposal: The optimizer's proposal behind them (its body is ``body``), for the registry.
    """

    spec: PolicySpec
    results: tuple[CalibrationResult, ...]
    body: PolicyBody
    proposal: Proposal

    def result(self, key: str, mode: LoadMode) -> CalibrationResult:
        """The result of ``key`` in ``mode``.

        Raises:
            KeyError: if there is none.
        """
        for found in self.results:
            if (found.key, found.mode) == (key, mode):
                return found
        raise KeyError((key, mode))

    def to_json(self) -> dict[str, Any]:
        """Per key and mode results, the method and the policy body, as JSON values."""
        table: dict[str, dict[str, Any]] = {}
        for r in self.results:
            table.setdefault(r.key, {})[r.mode] = r.model_dump(exclude={"key", "mode"})
        return {
            "policy_name": self.spec.name,
            "method": self.spec.risk.method,
            "loss": self.spec.risk.loss,
            "delta": self.spec.risk.delta,
            "min_samples": self.spec.min_samples,
            "segments": table,
            "policy": self.body.model_dump(mode="json"),
        }


def calibrate(
    spec: PolicySpec, samples: OfflineSamples, *, min_tokens: Sequence[int] = ()
) -> Calibration:
    """Certify a first policy from offline samples under ``spec`` (see the module doc).

    Use :func:`calibration_spec` first to apply options; the step limit
    applies as the spec says (``calibration_spec`` lifts it). With
    ``min_tokens`` candidates each key chooses among them (module doc); the
    spec's own ``min_tokens`` is used otherwise.

    Raises:
        OptimizerError: if there are no samples, or a candidate exceeds a key's budget.
    """
    if not len(samples):
        msg = "no trajectories to calibrate on"
        raise OptimizerError(msg)
    candidates = sorted(set(min_tokens))
    if len(candidates) <= 1:
        chosen = spec if not candidates else _with_min_tokens(spec, candidates[0], 1)
        proposal = optimize(chosen, dict(samples.batches))
        return _calibration(chosen, samples, proposal, {})
    chains = {m: _with_min_tokens(spec, m, len(candidates)) for m in candidates}
    proposals = {m: optimize(chains[m], dict(samples.batches)) for m in candidates}
    first = proposals[candidates[0]]
    keys = list(dict.fromkeys(d.key for d in first.decisions))
    pick = {
        key: max(candidates, key=lambda m: (proposals[m].decision(key, "normal").token_saving, -m))
        for key in keys
    }
    body = first.body.model_copy(
        update={"segments": {key: proposals[pick[key]].body.segments[key] for key in keys}}
    )
    decisions = tuple(d for key in keys for d in proposals[pick[key]].decisions if d.key == key)
    proposal = first.model_copy(update={"body": body, "decisions": decisions})
    return _calibration(
        chains[candidates[0]], samples, proposal, {k: chains[m] for k, m in pick.items()}
    )


def _with_min_tokens(spec: PolicySpec, min_tokens: int, chains: int) -> PolicySpec:
    """``spec`` with ``min_tokens`` everywhere and delta shared by ``chains`` chains."""
    data = spec.model_dump(mode="json")
    for settings in data["segments"]["settings"].values():
        if min_tokens > settings["token_budget"]:
            budget = settings["token_budget"]
            msg = f"min_tokens candidate {min_tokens} exceeds a token budget ({budget})"
            raise OptimizerError(msg)
        settings["min_tokens"] = min_tokens
    data["risk"]["delta"] = spec.risk.delta / chains
    return parse_spec(data, source=f"{spec.name} with min_tokens {min_tokens}")


def _calibration(
    spec: PolicySpec,
    samples: OfflineSamples,
    proposal: Proposal,
    spec_of: dict[str, PolicySpec],
) -> Calibration:
    """Measure each decision on its key's own rows, under the spec its rule came from."""
    results = []
    for d in proposal.decisions:
        own = spec_of.get(d.key, spec)
        net, gross = samples.curve(own, d.key), samples.curve(own, d.key, probes=False)
        results.append(_result(own, d, net, gross))
    return Calibration(spec, tuple(results), proposal.body, proposal)


def _result(spec: PolicySpec, d: SegmentDecision, net: Curve, gross: Curve) -> CalibrationResult:
    """The decision measured on the key's own rows."""
    j = net.grid.index(d.threshold)
    off = d.threshold >= 1.0
    floor = _floor(d)
    note = ""
    if d.population is None:
        note = "too few samples to test"
    elif floor >= 1.0:
        note = "no threshold certified"
    elif off:
        note = "certified, but every certified threshold loses tokens net of probes"
    return CalibrationResult(
        key=d.key,
        mode=d.mode,
        threshold=d.threshold,
        min_tokens=spec.settings_for(d.key).min_tokens,
        certified=d.certified and not off,
        most_aggressive=floor,
        population=d.population,
        guarantee="none" if off else d.guarantee,
        epsilon=d.epsilon,
        delta=d.delta,
        samples=net.n,
        population_samples=d.population_samples,
        saving=float(net.token_saving()[j]),
        gross_saving=float(gross.token_saving()[j]),
        em_drop=float(net.signed_drop()[j]),
        em_drop_bound=0.0 if off else d.em_drop_bound,
        full_em=net.full_correct / max(net.n, 1),
        note=note,
    )


def _floor(d: SegmentDecision) -> float:
    """The lowest certified threshold: the certified prefix of the tested walk (1.0: none)."""
    if not d.certified:
        return 1.0
    # d.p_values is the walk, safest first: its leading run of passes is certified.
    run = takewhile(lambda tested: tested[1] <= d.delta, d.p_values)
    return min([d.threshold, *(theta for theta, _ in run)])


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a policy does to offline samples: net saving and signed EM drop."""

    requests: int
    saving: float
    """Share of full-generation tokens saved, net of probe tokens."""
    em_drop: float
    """Mean of full EM minus served EM."""


def served(body: PolicyBody, samples: OfflineSamples, mode: LoadMode = "normal") -> Replayed:
    """Replay ``body`` (its rule for each key's segment, in ``mode``) on ``samples``.

    Raises:
        OptimizerError: if a policy the samples use has a schedule of more than one
            step (not replayed here).
    """
    n = spent = full = signed = 0
    for leaf, batch in samples.batches.items():
        policy = body.policy_for(segment_from_key(leaf))
        steps = policy.schedules.get(mode, policy.schedule)
        if len(steps) > 1:
            msg = f"the policy of {leaf!r} has a schedule of several steps, not replayed offline"
            raise OptimizerError(msg)
        theta = min(policy.thresholds.get(mode, policy.thresholds["normal"]), 1.0)
        shape = (steps[0][0], theta - steps[0][1]) if steps else None
        curve = evaluate(batch, (theta,), policy.min_tokens, policy.token_budget, shape)
        n, full = n + curve.n, full + curve.full_tokens
        spent += int(curve.tokens_used[0])
        signed += int(curve.losses[0] - curve.gains[0])
    return Replayed(n, 1.0 - spent / max(full, 1), signed / max(n, 1))
