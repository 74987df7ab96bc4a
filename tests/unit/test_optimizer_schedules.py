"""One-step schedules certified beside the plain thresholds (``spec.schedules``)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.node.decision import LOAD_MODES
from pipeline.node.snapshot import compile_segment
from pipeline.optimizer import ExplorationBatch, optimize
from pipeline.optimizer.certify import CertificateBook, advance, certificate_delta
from pipeline.optimizer.curve import after_step, evaluate, request_losses, stop_points
from schemas import PolicyBody, SegmentPolicy
from tests.unit._optimizer_data import SegmentModel, binomial_allowance, spec_with

KEY = "acme/qa/short"


def _spec(share: float = 0.5, selection: int = 100, **changes):  # type: ignore[no-untyped-def]
    risk = {"method": "anytime", "loss": "signed", "split": "none", **changes.pop("risk", {})}
    schedules = {"share": share, "selection_samples": selection, "from_tokens": [64, 128],
                 "lower_by": [0.1, 0.3], **changes.pop("schedules", {})}  # fmt: skip
    return spec_with(max_step=1.0, risk=risk, schedules=schedules, **changes)


def test_a_shaped_candidate_stops_where_the_node_would() -> None:
    rng = np.random.default_rng(5)
    batch = SegmentModel().sample(300, rng)
    grid = (0.5, 0.7, 0.85, 0.95, 1.0)
    shape = (64, 0.3)
    points = stop_points(batch, grid, 32, shape)
    for j, theta in enumerate(grid[:-1]):
        policy = SegmentPolicy(
            thresholds={"normal": theta},
            schedules={"normal": ((64, after_step(theta, shape)),)},
            min_tokens=32,
            token_budget=4096,
        )
        rule = compile_segment(KEY, policy, 0.0).modes[LOAD_MODES.index("normal")]
        for i in range(len(batch)):
            stop = -1
            for c in range(int(batch.length[i])):
                tokens = int(batch.tokens[i, c])
                if tokens >= batch.full_tokens[i]:
                    break
                bar = rule.threshold_at(tokens)
                if bar is not None and bar < 1.0 and batch.confidence[i, c] >= bar:
                    stop = c
                    break
            assert points[i, j] == stop, (theta, i)
    # 1.0 stays off whatever the shape, and a shape that lowers nothing is the plain rule.
    assert (points[:, -1] == -1).all()
    plain = evaluate(batch, grid, 32, 4096)
    same = evaluate(batch, grid, 32, 4096, (64, 0.0))
    assert np.array_equal(plain.tokens_used, same.tokens_used)
    shaped = evaluate(batch, grid, 32, 4096, shape)
    d = request_losses(batch, grid, 32, shape=shape)
    assert (d == 1).sum(axis=0).tolist() == shaped.losses.tolist()
    assert (shaped.tokens_used <= plain.tokens_used).all()


def test_selection_rows_choose_the_shape_and_are_never_fed_to_the_chain() -> None:
    rng = np.random.default_rng(7)
    spec = _spec(selection=100)
    book, _ = advance(CertificateBook.empty(spec), spec, {KEY: SegmentModel().sample(250, rng)})
    pop = book.populations[KEY]
    assert pop.trial_rows == 100
    assert sorted(pop.trials) == [(64, 0.1), (64, 0.3), (128, 0.1), (128, 0.3)]
    assert all(curve.n == 100 for curve in pop.trials.values())
    assert set(pop.chains) == set(pop.states)
    for eps, chain in pop.chains.items():
        assert chain.state.n == 150 and chain.curve.n == 150
        assert pop.states[eps].n == 250
        # Both certificates of a population share its delta for the epoch.
        total = chain.state.delta + pop.states[eps].delta
        assert total == pytest.approx(certificate_delta(spec, 1))
    again = CertificateBook.from_json(book.to_json())
    restored = again.populations[KEY]
    assert restored.trial_rows == 100 and set(restored.trials) == set(pop.trials)
    for eps, chain in pop.chains.items():
        twin = restored.chains[eps]
        assert twin.shape == chain.shape
        assert np.array_equal(twin.state.log_wealth, chain.state.log_wealth)
        assert np.array_equal(twin.curve.losses, chain.curve.losses)
    book, _ = advance(again, spec, {KEY: SegmentModel().sample(50, rng)})
    pop = book.populations[KEY]
    assert pop.trial_rows == 100 and all(curve.n == 100 for curve in pop.trials.values())
    assert all(chain.state.n == 200 for chain in pop.chains.values())


def test_schedules_at_share_0_are_off_and_cost_the_plain_thresholds_nothing() -> None:
    spec = _spec(share=0.0)
    assert spec.schedules.shapes() == ()
    book, _ = advance(
        CertificateBook.empty(spec),
        spec,
        {KEY: SegmentModel().sample(400, np.random.default_rng(1))},
    )
    pop = book.populations[KEY]
    assert not pop.chains and not pop.trials
    assert all(s.delta == certificate_delta(spec, 1) for s in pop.states.values())


def _late_answers(n: int, rng: np.random.Generator) -> ExplorationBatch:
    """Requests whose answer is right from 64 tokens on, but only mildly confident there.

    Before 64 tokens the trial answer is wrong and confidence reaches 0.9; from
    64 tokens on it is right with confidence 0.7-0.85. A plain threshold must
    stay above 0.9 (it then stops late, at 0.95 confidence near the end); the
    schedule "0.95, then 0.65 from 64 tokens" stops at 64.
    """
    k = 12
    cols = np.arange(k)
    tokens = np.broadcast_to((cols + 1) * 16, (n, k)).astype(np.int64)
    conf = np.where(cols < 3, rng.uniform(0.5, 0.9, (n, k)), rng.uniform(0.7, 0.85, (n, k)))
    conf[:, -2] = 0.96
    correct = np.broadcast_to(cols >= 3, (n, k)).copy()
    return ExplorationBatch(
        tokens=tokens, confidence=conf, correct=correct, length=np.full(n, k),
        full_tokens=np.full(n, 16 * k), full_correct=np.ones(n, np.bool_),
    )  # fmt: skip


def test_a_schedule_that_saves_more_is_served_and_the_node_applies_it() -> None:
    rng = np.random.default_rng(3)
    spec = _spec(min_samples=100)
    book, body = CertificateBook.empty(spec), None
    for _ in range(3):
        book, _ = advance(book, spec, {KEY: _late_answers(800, rng)}, current=body)
        body = optimize(spec, {}, current=body, book=book).body
    proposal = optimize(spec, {}, current=body, book=book)
    decision = proposal.decision(KEY, "normal")
    chain = book.populations[KEY].chains[decision.epsilon]
    assert chain.shape[0] == 64
    assert decision.schedule is not None and decision.certified
    start, after = decision.schedule
    assert start == 64 and after <= 0.85 and decision.threshold >= 0.9
    assert decision.token_saving > 0.5
    policy = proposal.body.segments[KEY]
    assert policy.schedules["normal"] == ((64, after),)
    assert policy.threshold_at(80, "normal") == after
    rule = compile_segment(KEY, policy, 0.0).modes[LOAD_MODES.index("normal")]
    assert rule.threshold_at(80) == after and rule.threshold_at(48) == decision.threshold
    # The policy's JSON carries the schedules; one without them keeps its old bytes.
    assert b'"schedules"' in proposal.body.model_dump_json().encode()
    plain = SegmentPolicy(thresholds={"normal": 1.0}, min_tokens=0, token_budget=16)
    assert "schedules" not in plain.model_dump_json()
    assert PolicyBody.model_validate_json(proposal.body.model_dump_json()) == proposal.body


def test_a_schedule_chain_keeps_its_promise_over_many_seeds_and_cycles() -> None:
    """Every stopping candidate of every shape has a true EM drop of exactly epsilon.

    Two checkpoints: at 16 tokens (confidence 0, never stops) and at 64
    (confidence 0.55, wrong with probability epsilon). A schedule candidate
    whose threshold from 64 tokens on is at most 0.55 stops there, at the
    boundary of the null (harder than the promise, which is about drops above
    epsilon); the others never stop and are safe. With delta 0.5 the chain's
    level is 0.5 / 2 x 0.9 = 0.225 in the first epoch: the share of seeds whose
    chain ever certifies a stopping candidate, over 5 cycles, must stay within
    it (plus binomial noise). Measured: 0.15 at the boundary, 0.02 at epsilon +
    0.01, 0.965 at epsilon - 0.01 (the chain's power).
    """
    runs, eps = 200, 0.02
    spec = _spec(
        share=0.9,
        selection=60,
        risk={"delta": 0.5},
        grid={"start": 0.5, "stop": 0.9, "step": 0.1},
        load_modes={m: {"epsilon": eps} for m in ("offpeak", "normal", "peak")},
        schedules={"from_tokens": [64], "lower_by": [0.2, 0.4]},
    )
    grid = spec.thresholds()
    violated = 0
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        book = CertificateBook.empty(spec)
        ever = False
        for _ in range(5):
            n = 400
            wrong = rng.random(n) < eps
            batch = ExplorationBatch(
                tokens=np.broadcast_to(np.array([16, 64]), (n, 2)).astype(np.int64),
                confidence=np.broadcast_to(np.array([0.0, 0.55]), (n, 2)).copy(),
                correct=np.stack([np.zeros(n, np.bool_), ~wrong], axis=1),
                length=np.full(n, 2), full_tokens=np.full(n, 200),
                full_correct=np.ones(n, np.bool_),
            )  # fmt: skip
            book, _ = advance(book, spec, {KEY: batch})
            chain = book.populations[KEY].chains.get(eps)
            if chain is not None and book.populations[KEY].epoch == 1:
                ever |= any(after_step(grid[i], chain.shape) <= 0.55 for i in chain.deployable())
        violated += ever
    assert violated / runs <= binomial_allowance(runs, 0.225)
