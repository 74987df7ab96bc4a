"""Immutable policy snapshots compiled from a ``PolicyBody``.

Compiling turns the pydantic policy into plain tuples once per update, so the
controller's hot path is a dict lookup and a few comparisons. The controller
swaps whole snapshots; nothing in a snapshot changes after it is built except
its memo of resolved segment keys, which only ever caches a pure function of
the snapshot and is dropped with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Literal

from pydantic import ValidationError

from pipeline.node.decision import LOAD_MODES, Rule
from pipeline.node.errors import DefaultPolicyError
from schemas import GLOBAL_SEGMENT, PolicyBody, Segment, SegmentPolicy, segment_ancestors

PolicySource = Literal["default", "disk", "broker"]


@dataclass(frozen=True, slots=True)
class SegmentRules:
    """The compiled policy of one segment key: a rule per load mode and for exploration."""

    key: str
    modes: tuple[Rule, Rule, Rule]
    """Indexed like :data:`~pipeline.node.decision.LOAD_MODES`."""
    explore: Rule
    exploration_share: float
    """Share of this key's requests that explore (the policy's when the key sets none)."""


def compile_segment(key: str, policy: SegmentPolicy, exploration_share: float) -> SegmentRules:
    """Compile one segment policy; mirrors ``SegmentPolicy.threshold_at`` exactly.

    ``exploration_share`` is the policy's, used when the segment sets none.
    """
    normal = policy.thresholds["normal"]
    modes = tuple(
        Rule(
            threshold=policy.thresholds.get(mode, normal),
            min_tokens=policy.min_tokens,
            token_budget=policy.token_budget,
            step_starts=tuple(start for start, _ in policy.schedules.get(mode, policy.schedule)),
            step_thresholds=tuple(t for _, t in policy.schedules.get(mode, policy.schedule)),
        )
        for mode in LOAD_MODES
    )
    explore = Rule(threshold=math.inf, min_tokens=0, token_budget=policy.token_budget, explore=True)
    share = exploration_share if policy.exploration_share is None else policy.exploration_share
    return SegmentRules(
        key=key, modes=(modes[0], modes[1], modes[2]), explore=explore, exploration_share=share
    )


@dataclass(frozen=True, slots=True, eq=False)
class PolicySnapshot:
    """One policy version, ready for the hot path."""

    policy_name: str
    version: int
    """The applied update's version; 0 for the packaged default."""
    source: PolicySource
    checksum: str | None
    exploration_share: float
    """The policy's; a segment may set its own (:attr:`SegmentRules.exploration_share`)."""
    canary_share: float
    candidate_version: int | None
    production: Mapping[str, SegmentRules]
    candidate: Mapping[str, SegmentRules] | None
    cache_size: int = 65_536
    resolved: dict[str, SegmentRules] = field(default_factory=dict)
    """Memo: any segment key seen so far -> its production rules."""
    resolved_candidate: dict[str, SegmentRules] = field(default_factory=dict)

    def resolve(self, segment: Segment | str, *, candidate: bool = False) -> SegmentRules:
        """The rules for ``segment`` (a ``Segment`` or a key), most specific key first.

        Falls back ``tenant/task/bucket`` -> ``task`` -> ``global``. Results are
        memoised; the memo starts over when it holds ``cache_size`` keys, which
        bounds memory under an unbounded set of tenants.
        """
        key = segment if isinstance(segment, str) else segment.key()
        use_candidate = candidate and self.candidate is not None
        memo = self.resolved_candidate if use_candidate else self.resolved
        found = memo.get(key)
        if found is not None:
            return found
        table = self.candidate if use_candidate and self.candidate else self.production
        rules = table[GLOBAL_SEGMENT]
        for name in segment_ancestors(key):
            if name in table:
                rules = table[name]
                break
        if len(memo) >= self.cache_size:
            memo.clear()
        memo[key] = rules
        return rules


def compile_snapshot(
    body: PolicyBody,
    *,
    policy_name: str,
    version: int,
    source: PolicySource,
    checksum: str | None = None,
    cache_size: int = 65_536,
) -> PolicySnapshot:
    """Compile a validated policy body into a snapshot."""
    share = body.exploration_share
    production = {key: compile_segment(key, p, share) for key, p in body.segments.items()}
    candidate = None
    if body.candidate_segments is not None:
        candidate = {
            key: compile_segment(key, p, share) for key, p in body.candidate_segments.items()
        }
    return PolicySnapshot(
        policy_name=policy_name,
        version=version,
        source=source,
        checksum=checksum,
        exploration_share=body.exploration_share,
        canary_share=body.canary_share if candidate is not None else 0.0,
        candidate_version=body.candidate_version if candidate is not None else None,
        production=MappingProxyType(production),
        candidate=MappingProxyType(candidate) if candidate is not None else None,
        cache_size=cache_size,
    )


DEFAULT_POLICY_RESOURCE = "default_policy.json"


def default_policy_bytes() -> bytes:
    """The packaged safe default policy, as shipped (a ``PolicyBody`` in JSON)."""
    try:
        return resources.files("pipeline.node").joinpath(DEFAULT_POLICY_RESOURCE).read_bytes()
    except OSError as exc:
        msg = f"the packaged default policy is missing ({exc}): reinstall earlystop-pipeline"
        raise DefaultPolicyError(msg) from None


def default_policy_body() -> PolicyBody:
    """The packaged safe default policy, validated.

    Raises:
        DefaultPolicyError: if the file is missing or not a valid ``PolicyBody``.
    """
    try:
        return PolicyBody.model_validate_json(default_policy_bytes())
    except ValidationError as exc:
        msg = f"the packaged default policy is invalid: {exc.errors()[0]['msg']}"
        raise DefaultPolicyError(msg) from None


def default_snapshot(policy_name: str = "default", *, cache_size: int = 65_536) -> PolicySnapshot:
    """A snapshot of the safe default policy, version 0, for a node that has nothing else."""
    return compile_snapshot(
        default_policy_body(),
        policy_name=policy_name,
        version=0,
        source="default",
        cache_size=cache_size,
    )
