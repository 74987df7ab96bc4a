"""The early-stop controller: answers ``should_stop`` from an immutable snapshot.

Thread model: any number of generation threads read; the control subscriber
writes by replacing ``self._snapshot`` in one attribute assignment, which is
atomic in CPython. A reader that has fetched the old snapshot finishes with
it, and a :class:`RequestPlan` pins one snapshot's rule for its whole request.
"""

from __future__ import annotations

from bisect import bisect_right

from pipeline.node.config import LoadBands
from pipeline.node.decision import (
    BELOW_THRESHOLD,
    BUDGET,
    CONFIDENT,
    LOAD_MODES,
    Decision,
    RequestPlan,
    buckets,
)
from pipeline.node.load import next_load_mode
from pipeline.node.snapshot import PolicySnapshot, default_snapshot
from schemas import LoadMode, Segment

_MODE_INDEX: dict[LoadMode, int] = {mode: i for i, mode in enumerate(LOAD_MODES)}


class Controller:
    """Decides when a generation stops early, under the current policy snapshot.

    Args:
        snapshot: The policy to start with; the packaged safe default when None.
        bands: Hysteresis bands of the load signal.
        policy_name: Name for the default snapshot when ``snapshot`` is None.
    """

    def __init__(
        self,
        snapshot: PolicySnapshot | None = None,
        *,
        bands: LoadBands | None = None,
        policy_name: str = "default",
    ) -> None:
        self._snapshot = snapshot or default_snapshot(policy_name)
        self._bands = bands or LoadBands()
        self._mode: LoadMode = "normal"
        self._mode_index = _MODE_INDEX["normal"]

    @property
    def snapshot(self) -> PolicySnapshot:
        """The policy snapshot in force now."""
        return self._snapshot

    def swap(self, snapshot: PolicySnapshot) -> None:
        """Serve ``snapshot`` from now on (one atomic assignment; plans in flight keep theirs)."""
        self._snapshot = snapshot

    @property
    def load_mode(self) -> LoadMode:
        """The current load mode."""
        return self._mode

    def observe_load(self, load: float) -> LoadMode:
        """Feed the node's load signal in [0, 1]; returns the (possibly new) load mode."""
        mode = next_load_mode(self._mode, load, self._bands)
        if mode != self._mode:
            # Index first: a reader seeing the new index with the old name is harmless.
            self._mode_index = _MODE_INDEX[mode]
            self._mode = mode
        return mode

    def begin(self, request_id: str, segment: Segment | str) -> RequestPlan:
        """Fix how request ``request_id`` runs: exploration, canary or production.

        The choice is a deterministic function of ``request_id`` (see
        :func:`~pipeline.node.decision.buckets`), the snapshot and the load
        mode at this moment; the request keeps it until it ends.
        """
        snap = self._snapshot
        mode = self._mode
        explore_u, canary_u = buckets(request_id)
        rules = snap.resolve(segment)
        if explore_u < rules.exploration_share:
            return RequestPlan(
                request_id=request_id,
                policy_name=snap.policy_name,
                policy_version=snap.version,
                arm="production",
                exploration=True,
                load_mode=mode,
                segment_key=rules.key,
                rule=rules.explore,
            )
        if snap.candidate_version is not None and canary_u < snap.canary_share:
            rules = snap.resolve(segment, candidate=True)
            return RequestPlan(
                request_id=request_id,
                policy_name=snap.policy_name,
                policy_version=snap.candidate_version,
                arm="candidate",
                exploration=False,
                load_mode=mode,
                segment_key=rules.key,
                rule=rules.modes[_MODE_INDEX[mode]],
            )
        return RequestPlan(
            request_id=request_id,
            policy_name=snap.policy_name,
            policy_version=snap.version,
            arm="production",
            exploration=False,
            load_mode=mode,
            segment_key=rules.key,
            rule=rules.modes[_MODE_INDEX[mode]],
        )

    def should_stop(
        self, segment: RequestPlan | Segment | str, tokens_so_far: int, confidence: float
    ) -> Decision:
        """Whether to stop after ``tokens_so_far`` tokens at ``confidence``, and why.

        Pass the request's :class:`RequestPlan` (from :meth:`begin`) in a real
        generation loop: it is the fastest path and keeps exploration, canary
        and the policy version fixed for the request. A ``Segment`` or a key
        string (``"tenant/task/bucket"``) decides under the production policy
        in force right now, for callers without a plan.
        """
        if type(segment) is RequestPlan:
            rule = segment.rule
        else:
            snap = self._snapshot
            if isinstance(segment, str):
                rules = snap.resolved.get(segment) or snap.resolve(segment)
            else:
                rules = snap.resolve(segment)
            rule = rules.modes[self._mode_index]
        # The body of decision.decide, inlined: a call is a third of the cost here.
        if tokens_so_far < rule.hold_below:
            return rule.hold
        threshold = rule.threshold
        if rule.step_starts:
            index = bisect_right(rule.step_starts, tokens_so_far)
            if index:
                threshold = rule.step_thresholds[index - 1]
        if confidence >= threshold:
            return CONFIDENT
        if tokens_so_far >= rule.token_budget:
            return BUDGET
        return BELOW_THRESHOLD
