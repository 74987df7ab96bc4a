"""Replaying a threshold on recorded trajectories, exactly as a node would have stopped."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.node.decision import Rule, decide
from pipeline.optimizer import (
    Curve,
    ExplorationBatch,
    OptimizerError,
    Trajectory,
    evaluate,
    trajectory_from_outcome,
)
from pipeline.optimizer.curve import after_step, request_losses, stop_points
from schemas import Checkpoint, InferenceEvent, Outcome, Segment

GRID = (0.0, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)


@st.composite
def trajectories(draw: st.DrawFn) -> Trajectory:
    steps = draw(st.lists(st.integers(1, 40), min_size=1, max_size=8))
    tokens = tuple(int(t) for t in np.cumsum(steps))
    m = len(tokens)
    confidence = tuple(draw(st.lists(st.sampled_from(GRID + (0.65, 0.95)), min_size=m, max_size=m)))
    correct = tuple(draw(st.lists(st.booleans(), min_size=m, max_size=m)))
    full_tokens = tokens[-1] + draw(st.integers(0, 20))
    probe = draw(st.sampled_from((0, 0, 3, 9)))
    return Trajectory(tokens, confidence, correct, draw(st.booleans()), full_tokens, probe)


def _node_replay(t: Trajectory, theta: float, min_tokens: int) -> tuple[bool, int]:
    # The node asks should_stop at each checkpoint; a checkpoint at the end is the end.
    # A rule that can stop early pays a probe at every checkpoint from min_tokens on.
    rule = Rule(threshold=theta, min_tokens=min_tokens, token_budget=10**6)
    probes = 0
    for tokens, confidence, correct in zip(t.tokens, t.confidence, t.correct, strict=True):
        if theta < 1.0 and tokens >= min_tokens:
            probes += t.probe_tokens
        if tokens < t.full_tokens and decide(rule, tokens, confidence).reason == "confident":
            return correct, tokens + probes
    return t.full_correct, t.full_tokens + probes


@settings(max_examples=200, deadline=None)
@given(st.lists(trajectories(), min_size=1, max_size=6), st.integers(0, 60))
def test_evaluate_matches_the_node_decision(rows: list[Trajectory], min_tokens: int) -> None:
    curve = evaluate(ExplorationBatch.from_trajectories(rows), GRID, min_tokens, 4096)
    for j, theta in enumerate(GRID):
        replay = [_node_replay(t, theta, min_tokens) for t in rows]
        losses = sum(
            t.full_correct and not right for t, (right, _) in zip(rows, replay, strict=True)
        )
        gains = sum(
            right and not t.full_correct for t, (right, _) in zip(rows, replay, strict=True)
        )
        assert curve.losses[j] == losses
        assert curve.gains[j] == gains
        assert curve.tokens_used[j] == sum(tokens for _, tokens in replay)
    assert curve.n == len(rows)
    assert curve.full_tokens == sum(t.full_tokens for t in rows)


@given(st.lists(trajectories(), min_size=2, max_size=8), st.integers(1, 7))
def test_curves_of_disjoint_samples_add_up(rows: list[Trajectory], cut: int) -> None:
    cut = min(cut, len(rows) - 1)
    whole = evaluate(ExplorationBatch.from_trajectories(rows), GRID, 10, 100)
    parts = evaluate(ExplorationBatch.from_trajectories(rows[:cut]), GRID, 10, 100) + evaluate(
        ExplorationBatch.from_trajectories(rows[cut:]), GRID, 10, 100
    )
    for name in ("losses", "gains", "tokens_used"):
        assert np.array_equal(getattr(whole, name), getattr(parts, name))
    assert (whole.n, whole.full_tokens, whole.budget_tokens, whole.full_correct) == (
        parts.n,
        parts.full_tokens,
        parts.budget_tokens,
        parts.full_correct,
    )


def test_savings_and_rates() -> None:
    rows = [
        Trajectory((10, 20, 30), (0.2, 0.95, 0.99), (False, False, True), True, 40),
        Trajectory((10, 20), (0.96, 0.97), (True, True), True, 20),
    ]
    curve = evaluate(
        ExplorationBatch.from_trajectories(rows), (0.9, 1.0), min_tokens=0, token_budget=100
    )
    # At 0.9 the first stops at 20 tokens (wrong), the second at 10 (right).
    assert curve.losses.tolist() == [1, 0]
    assert curve.tokens_used.tolist() == [30, 60]
    assert curve.em_drop().tolist() == [0.5, 0.0]
    assert curve.token_saving().tolist() == pytest.approx([0.5, 0.0])
    assert curve.budget_saving().tolist() == pytest.approx([0.15, 0.0])


def test_probes_are_charged_to_every_threshold_that_can_stop_early() -> None:
    rows = [
        Trajectory((10, 20, 30), (0.2, 0.95, 0.99), (False, True, True), True, 40, probe_tokens=5),
        Trajectory((10, 20), (0.1, 0.2), (True, True), True, 20, probe_tokens=5),
    ]
    curve = evaluate(
        ExplorationBatch.from_trajectories(rows), (0.9, 1.0), min_tokens=0, token_budget=100
    )
    # 0.9: the first stops at 20 after 2 probes; the second never stops but probes twice.
    assert curve.tokens_used.tolist() == [20 + 10 + 20 + 10, 60]
    assert curve.token_saving().tolist() == pytest.approx([0.0, 0.0])


def test_empty_inputs() -> None:
    empty = evaluate(ExplorationBatch.from_trajectories([]), GRID, 0, 10)
    assert empty.n == 0 and empty.em_drop().tolist() == [0.0] * len(GRID)
    with pytest.raises(OptimizerError, match="different grids"):
        _ = Curve.empty((0.5, 1.0)) + Curve.empty((0.6, 1.0))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (Trajectory((10, 10), (0.5, 0.5), (True, True), True, 20), "strictly increase"),
        (Trajectory((10,), (1.5,), (True,), True, 20), "within"),
        (Trajectory((10, 30), (0.5, 0.5), (True, True), True, 20), "beyond full_tokens"),
        (Trajectory((10,), (0.5, 0.6), (True,), True, 20), "differ in length"),
    ],
)
def test_invalid_trajectories_are_refused(row: Trajectory, problem: str) -> None:
    with pytest.raises(OptimizerError, match=problem):
        ExplorationBatch.from_trajectories([row])


@pytest.mark.parametrize("grid", [(), (0.5, 0.5), (0.9, 0.5), (0.5, 1.5)])
def test_invalid_grids_are_refused(grid: tuple[float, ...]) -> None:
    with pytest.raises(OptimizerError, match="grid"):
        evaluate(ExplorationBatch.from_trajectories([]), grid, 0, 10)


def test_batches_are_read_only() -> None:
    batch = ExplorationBatch.from_trajectories([Trajectory((1,), (0.5,), (True,), True, 2)])
    with pytest.raises(ValueError, match="read-only"):
        batch.confidence[0, 0] = 0.9


def _outcome(*, exploration: bool, labeled: bool) -> Outcome:
    event = InferenceEvent(
        event_id="e1",
        request_id="r1",
        node_id="n1",
        ts=datetime(2025, 1, 1, tzinfo=UTC),
        model="m",
        segment=Segment(task="qa", length_bucket="short", tenant="acme"),
        policy_name="earlystop",
        policy_version=0,
        threshold=None if exploration else 0.9,
        arm="production",
        exploration=exploration,
        tokens_prompt=10,
        tokens_generated=48,
        tokens_budget=64,
        stop_reason="natural_end",
        confidence=0.8,
        answer="Paris",
        latency_ms=5.0,
        node_load=0.2,
        trajectory=(
            Checkpoint(tokens=16, confidence=0.4, answer="Lyon"),
            Checkpoint(tokens=32, confidence=0.9, answer="Paris"),
        )
        if exploration
        else None,
    )
    return Outcome(
        request_id="r1",
        event=event,
        labeled=labeled,
        em=True if labeled else None,
        checkpoint_em=(False, True) if labeled and exploration else None,
        version=1,
        joined_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_trajectory_from_a_labeled_exploration_outcome() -> None:
    row = trajectory_from_outcome(_outcome(exploration=True, labeled=True))
    assert row == Trajectory((16, 32), (0.4, 0.9), (False, True), True, 48)
    assert trajectory_from_outcome(_outcome(exploration=True, labeled=False)) is None
    assert trajectory_from_outcome(_outcome(exploration=False, labeled=True)) is None


def _stop_points_one_candidate_at_a_time(
    batch: ExplorationBatch,
    grid: tuple[float, ...],
    min_tokens: int,
    shape: tuple[int, float] | None,
) -> np.ndarray:
    # The rule read literally, one candidate at a time: the first checkpoint from
    # min_tokens on, before the end, whose confidence reaches the candidate's bar.
    points = np.full((len(batch), len(grid)), -1, dtype=np.int64)
    for j, theta in enumerate(grid):
        if theta >= 1.0:
            continue
        for i in range(len(batch)):
            for c in range(int(batch.length[i])):
                tokens = int(batch.tokens[i, c])
                if tokens < min_tokens or tokens >= batch.full_tokens[i]:
                    continue
                bar = theta
                if shape is not None and tokens >= shape[0]:
                    bar = after_step(theta, shape)
                if batch.confidence[i, c] >= bar:
                    points[i, j] = c
                    break
    return points


@settings(max_examples=150, deadline=None)
@given(
    st.lists(trajectories(), min_size=1, max_size=8),
    st.integers(0, 60),
    st.one_of(
        st.none(),
        st.tuples(st.integers(1, 120), st.sampled_from((0.0, 0.05, 0.2, 0.3, 0.6, 1.0))),
    ),
)
def test_stop_points_are_the_rule_read_one_candidate_at_a_time(
    rows: list[Trajectory], min_tokens: int, shape: tuple[int, float] | None
) -> None:
    # Confidences sit on the bars themselves (GRID values, and GRID - lower_by), so
    # every tie of "confidence >= bar" is exercised, padding columns included.
    batch = ExplorationBatch.from_trajectories(rows)
    expected = _stop_points_one_candidate_at_a_time(batch, GRID, min_tokens, shape)
    assert np.array_equal(stop_points(batch, GRID, min_tokens, shape), expected)
    curve = evaluate(batch, GRID, min_tokens, 4096, shape)
    signed = request_losses(batch, GRID, min_tokens, shape=shape)
    assert (signed == 1).sum(axis=0).tolist() == curve.losses.tolist()
    assert (signed == -1).sum(axis=0).tolist() == curve.gains.tolist()
