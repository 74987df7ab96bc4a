"""Anytime-valid certificates: betting e-processes, the fixed-sequence walk, the harm detector."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.optimizer import OptimizerError
from pipeline.optimizer.anytime import (
    DEFAULT_CAPS,
    BettingState,
    HarmDetector,
    candidate_order,
    fixed_sequence,
)
from pipeline.optimizer.curve import ExplorationBatch, evaluate, request_losses


def ternary(rng: np.random.Generator, p_neg: float, p_pos: float, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    u = rng.random(shape)
    return (u < p_pos).astype(np.int8) - (u >= 1.0 - p_neg).astype(np.int8)


def test_incremental_updates_equal_one_batch_and_survive_json() -> None:
    rng = np.random.default_rng(0)
    d = ternary(rng, 0.08, 0.07, (3000, 4))
    start = BettingState.start(4, epsilon=0.02, delta=0.05)
    whole = start.update(d)
    parts = start
    for chunk in np.split(d, [0, 1, 7, 7, 500, 1999, 2999]):  # includes empty batches
        parts = BettingState.from_json(json.loads(json.dumps(parts.to_json()))).update(chunk)
    assert parts.n == whole.n == 3000
    for name in ("sum_x", "sum_x2", "sum_d", "log_wealth", "max_log_wealth", "crossed_at"):
        assert np.array_equal(getattr(parts, name), getattr(whole, name)), name


def _mean_wealth(
    p_neg: float, p_pos: float, caps: tuple[float, ...] = DEFAULT_CAPS
) -> tuple[float, float]:
    rng = np.random.default_rng(12345)
    paths = 20_000
    d = ternary(rng, p_neg, p_pos, (200, paths))
    state = BettingState.start(paths, epsilon=0.02, delta=0.01, caps=caps).update(d)
    wealth = np.exp(state.log_wealth)
    return float(wealth.mean()), float(wealth.std() / np.sqrt(paths))


@pytest.mark.parametrize("caps", [DEFAULT_CAPS, (0.5,), (0.9,)])
def test_wealth_is_a_supermartingale_at_the_null_boundary(caps: tuple[float, ...]) -> None:
    # E[d] = epsilon exactly: E[K_t] <= 1 for predictable bets. A bet that peeked at
    # the current sample, or the wrong sign of x, would push the mean far above 1.
    mean, se = _mean_wealth(0.065, 0.085, caps)
    assert mean <= 1.0 + 4.0 * se
    inside, _ = _mean_wealth(0.055, 0.095, caps)  # E[d] = .04 > epsilon
    assert inside < 1.0


def test_the_supermartingale_check_can_fail() -> None:
    # One cap: the large cap's wealth is too heavy-tailed for a mean +- 4 se here.
    mean, se = _mean_wealth(0.1, 0.07, (0.5,))  # E[d] = -0.03 < epsilon: wealth grows
    assert mean > 1.0 + 4.0 * se


def test_certifies_when_the_mean_is_clearly_below_epsilon_and_latches() -> None:
    rng = np.random.default_rng(1)
    d = ternary(rng, 0.10, 0.05, (4000, 1))  # E[d] = -0.05, epsilon = 0.02
    state = BettingState.start(1, epsilon=0.02, delta=0.01).update(d)
    assert state.certified[0] and 0 < state.crossed_at[0] <= 4000
    assert state.p_value[0] <= 0.01
    worse = state.update(np.ones((400, 1)))  # the wealth falls, the certificate stays
    assert worse.certified[0] and worse.log_wealth[0] < state.log_wealth[0]


def test_one_sided_loss_and_validation() -> None:
    rng = np.random.default_rng(2)
    loss = (rng.random((3000, 2)) < [0.005, 0.04]).astype(np.int8)
    state = BettingState.start(2, epsilon=0.02, delta=0.01, lower=0.0).update(loss)
    assert state.certified.tolist() == [True, False]
    with pytest.raises(OptimizerError):
        state.update(-np.ones((1, 2)))
    with pytest.raises(OptimizerError):
        state.update(np.zeros((3, 3)))
    with pytest.raises(OptimizerError):
        BettingState.start(1, epsilon=0.02, delta=1.0)
    with pytest.raises(OptimizerError):
        BettingState.from_json({"n": 1})


def test_never_certifies_without_samples() -> None:
    state = BettingState.start(3, epsilon=0.02, delta=0.5).update(np.zeros((0, 3)))
    assert state.n == 0 and not state.certified.any()
    assert fixed_sequence(state.certified, candidate_order([0.5, 0.7, 0.9])) == ()


def test_fixed_sequence_stops_at_the_first_uncertified_and_leaves_off_out() -> None:
    grid = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    order = candidate_order(grid)
    assert order.tolist() == [4, 3, 2, 1, 0]  # 1.0 is off: zero risk, never tested
    certified = np.array([True, False, True, True, True, False])
    assert fixed_sequence(certified, order) == (4, 3, 2)


def test_harm_detector_stays_quiet_under_no_change_and_fires_after_one() -> None:
    rng = np.random.default_rng(4)
    quiet = HarmDetector(epsilon=0.02)
    false_alarms = 0
    for _ in range(20):
        _, alarm = quiet.update((rng.random(2000) < 0.01).astype(float))
        false_alarms += alarm is not None
    assert false_alarms <= 1  # mean run length to a false alarm >= 1000 samples
    before = (rng.random(3000) < 0.0).astype(float)
    after = (rng.random(2000) < 0.15).astype(float)
    _, alarm = HarmDetector(epsilon=0.02).update(np.concatenate([before, after]))
    assert alarm is not None and 3000 < alarm < 3300


def _batch(rng: np.random.Generator, n: int) -> ExplorationBatch:
    k = 6
    tokens = np.tile(np.arange(1, k + 1) * 8, (n, 1))
    conf = np.maximum.accumulate(rng.random((n, k)), axis=1)
    return ExplorationBatch(
        tokens=tokens, confidence=conf, correct=rng.random((n, k)) < 0.5,
        length=np.full(n, k), full_tokens=np.full(n, 8 * k), full_correct=rng.random(n) < 0.6,
    )  # fmt: skip


def test_request_losses_agree_with_the_curve_counts_and_one_is_off() -> None:
    rng = np.random.default_rng(3)
    batch = _batch(rng, 400)
    batch.confidence.flags.writeable = True
    batch.confidence[:, 1] = 1.0  # a probe that is sure: still no stop at 1.0
    grid = (0.5, 0.7, 0.9, 1.0)
    counted = evaluate(batch, grid, 16, 4096)
    d = request_losses(batch, grid, 16)
    assert (d == 1).sum(axis=0).tolist() == counted.losses.tolist()
    assert (d == -1).sum(axis=0).tolist() == counted.gains.tolist()
    assert not d[:, 3].any() and counted.tokens_used[3] == batch.full_tokens.sum()
    assert request_losses(batch, grid, 16, one_sided=True).min() == 0


def test_ltt_promises_the_signed_loss_with_exact_bounds_only() -> None:
    from pipeline.optimizer import SpecError
    from tests.unit._optimizer_data import spec_with

    assert spec_with(risk={"method": "ltt", "loss": "signed"}).risk.loss == "signed"
    with pytest.raises(SpecError, match="exact"):
        spec_with(risk={"method": "ltt", "loss": "signed", "p_value": "hoeffding_bentkus"})


def test_a_pooled_certificate_needs_a_reviewer_unless_the_spec_allows_it() -> None:
    from pipeline.optimizer import optimize, review_reasons
    from tests.unit._optimizer_data import SegmentModel, spec_with

    rng = np.random.default_rng(5)
    samples = {
        "acme/qa/short": SegmentModel().sample(3000, rng),
        "globex/qa/short": SegmentModel().sample(50, rng),  # too few: tested on the qa pool
    }
    risk = {"method": "anytime", "loss": "signed", "split": "none"}
    bounds = {"max_step": 1.0, "max_em_drop_bound": 0.05, "min_samples": 0}
    strict = spec_with(max_step=1.0, risk=risk, auto_approve=bounds)
    proposal = optimize(strict, samples)
    small = proposal.decision("globex/qa/short", "normal")
    assert small.guarantee == "pooled" and small.threshold < 1.0
    assert any("pooled samples of qa" in r for r in review_reasons(proposal, strict))
    lenient = spec_with(max_step=1.0, risk=risk, auto_approve={**bounds, "pooled": True})
    assert not any("pooled" in r for r in review_reasons(optimize(lenient, samples), lenient))


def test_a_pool_interleaves_its_segments_so_an_easy_one_cannot_certify_a_hard_mixture() -> None:
    from pipeline.optimizer.certify import CertificateBook, advance
    from tests.unit._optimizer_data import SegmentModel, spec_with

    spec = spec_with(
        max_step=1.0,
        min_samples=10**6,
        risk={"method": "anytime", "loss": "signed", "split": "none"},
    )
    rng = np.random.default_rng(8)
    easy = SegmentModel(mu=-2.0).sample(4000, rng)  # rarely stops early: loss near 0
    hard = SegmentModel(mu=1.5, tau=0.8).sample(4000, rng)  # over-confident: heavy losses
    # "a/qa/short" sorts first: fed block after block, it would certify qa on its own.
    book, _ = advance(CertificateBook.empty(spec), spec, {"a/qa/short": easy, "z/qa/short": hard})
    pool = book.populations["qa"]
    eps = spec.epsilon("qa", "normal")
    for j in pool.deployable(eps):
        assert pool.curve.signed_drop()[j] <= eps + 0.01
    # With request times the pool follows them, whatever they say: arrivals that put
    # every easy row first reproduce the block-by-block failure the interleaving prevents.
    timed = {
        "a/qa/short": dataclasses.replace(easy, arrival=np.arange(4000.0)),
        "z/qa/short": dataclasses.replace(hard, arrival=np.arange(4000.0) + 4000),
    }
    book, _ = advance(CertificateBook.empty(spec), spec, timed)
    blocked = book.populations["qa"]
    assert any(blocked.curve.signed_drop()[j] > eps + 0.01 for j in blocked.deployable(eps))


def _stationary_book(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Three segments after 3 stationary cycles of 600 samples each: spec, book, policy.

    The qa segments are served from the qa pool (min_samples 3000); no restart happens.
    """
    from pipeline.optimizer import optimize
    from pipeline.optimizer.certify import CertificateBook, advance
    from tests.unit._optimizer_data import SegmentModel, spec_with

    spec = spec_with(
        max_step=1.0,
        min_samples=3000,
        risk={"method": "anytime", "loss": "signed", "split": "none"},
    )
    keys = ["acme/qa/short", "globex/qa/short", "acme/math/short"]
    book, body = CertificateBook.empty(spec), None
    for _ in range(3):
        book, events = advance(book, spec, {k: SegmentModel().sample(600, rng) for k in keys},
                               current=body)  # fmt: skip
        body = optimize(spec, {}, current=body, book=book).body
        assert not events
    return spec, book, body


def test_a_segment_drifting_inside_a_pool_restarts_alone_and_goes_safe() -> None:
    from pipeline.optimizer import optimize
    from pipeline.optimizer.certify import advance
    from tests.unit._optimizer_data import SegmentModel

    rng = np.random.default_rng(11)
    spec, book, body = _stationary_book(rng)
    drifting = optimize(spec, {}, current=body, book=book).decision("acme/qa/short", "normal")
    assert drifting.population == "qa" and drifting.threshold < 1.0
    drifted = {
        "acme/qa/short": SegmentModel(mu=2.0, tau=0.8).sample(150, rng),  # over-confident now
        "globex/qa/short": SegmentModel().sample(150, rng),
        "acme/math/short": SegmentModel().sample(150, rng),
    }
    book, events = advance(book, spec, drifted, current=body)
    assert any(e.startswith("acme/qa/short: epoch 1 ends") for e in events), events
    assert book.populations["acme/qa/short"].epoch == 2
    # Populations without the drifted segment keep their evidence (pools that hold it,
    # qa and global, may restart too: their mixture changed).
    assert book.populations["acme/math/short"].epoch == 1
    assert book.populations["math"].epoch == 1
    after = optimize(spec, {}, current=body, book=book)
    assert after.decision("acme/qa/short", "normal").threshold == 1.0


def test_a_new_epoch_starts_with_the_rows_after_the_alarm() -> None:
    import re

    from pipeline.optimizer.certify import advance
    from tests.unit._optimizer_data import SegmentModel

    rng = np.random.default_rng(11)
    spec, book, body = _stationary_book(rng)
    drifted = {
        "acme/qa/short": SegmentModel(mu=2.0, tau=0.8).sample(400, rng),
        "globex/qa/short": SegmentModel().sample(400, rng),
        "acme/math/short": SegmentModel().sample(400, rng),
    }
    book, events = advance(book, spec, drifted, current=body)
    ended = {
        e.split(":")[0]: int(m.group(1))
        for e in events
        if (m := re.search(r"ends after (\d+) new samples", e))
    }
    assert "acme/qa/short" in ended, events
    seen = ended["acme/qa/short"]
    assert seen < 400  # the alarm came inside the cycle, so rows remain after it
    fresh = book.populations["acme/qa/short"]
    assert fresh.epoch == 2 and fresh.curve.n == 400 - seen
    settings = spec.settings_for("acme/qa/short")
    tail = drifted["acme/qa/short"].take(np.arange(seen, 400))
    expected = evaluate(tail, spec.thresholds(), settings.min_tokens, settings.token_budget)
    assert np.array_equal(fresh.curve.losses, expected.losses)
    assert np.array_equal(fresh.curve.tokens_used, expected.tokens_used)
    for state in fresh.states.values():
        assert state.n == 400 - seen
    for pool in ("qa", "global"):  # a pool that restarted keeps its members' rows after its alarm
        if pool in ended:
            assert book.populations[pool].curve.n == (800 if pool == "qa" else 1200) - ended[pool]


def test_epochs_spend_at_most_delta_in_all() -> None:
    from pipeline.optimizer.certify import certificate_delta
    from tests.unit._optimizer_data import spec_with

    spec = spec_with(risk={"method": "anytime", "loss": "signed", "split": "none", "delta": 0.1})
    spent = [certificate_delta(spec, k) for k in range(1, 100_001)]
    assert spent[0] == pytest.approx(0.05) and spent[1] == pytest.approx(0.025)
    assert all(a > b for a, b in zip(spent, spent[1:], strict=False))
    assert 0.0999 < sum(spent) <= 0.1


def test_the_hedge_certifies_a_loss_free_rule_a_third_sooner_and_pays_at_most_log_two() -> None:
    # No loss: every sample adds a fixed log(1 + cap * eps / (1 - eps)), so the first
    # crossing is set by the cap alone.
    clean = np.zeros((2000, 1))
    single = BettingState.start(1, epsilon=0.02, delta=0.02, caps=(0.5,)).update(clean)
    hedged = BettingState.start(1, epsilon=0.02, delta=0.02).update(clean)
    assert hedged.crossed_at[0] < 0.75 * single.crossed_at[0]
    # With losses the average never falls more than log 2 below its better member.
    rng = np.random.default_rng(6)
    d = ternary(rng, 0.01, 0.03, (3000, 8))
    mixed = BettingState.start(8, epsilon=0.02, delta=0.02).update(d)
    start = [BettingState.start(8, epsilon=0.02, delta=0.02, caps=(c,)) for c in DEFAULT_CAPS]
    members = [s.update(d) for s in start]
    best = np.maximum(*(m.log_wealth for m in members))
    assert np.all(mixed.log_wealth >= best - np.log(2) - 1e-12)
    assert np.allclose(mixed.components, [m.log_wealth for m in members])


def test_a_state_saved_before_the_hedge_goes_on_with_its_one_cap() -> None:
    rng = np.random.default_rng(7)
    d = ternary(rng, 0.05, 0.05, (1000, 3))
    one = BettingState.start(3, epsilon=0.02, delta=0.05, caps=(0.5,)).update(d[:400])
    saved = one.to_json()
    saved["cap"] = saved.pop("caps")[0]  # the format written before the hedge
    saved["log_wealth"] = saved["log_wealth"][0]
    loaded = BettingState.from_json(saved)
    assert loaded.caps == (0.5,)
    after, expected = loaded.update(d[400:]), one.update(d[400:])
    assert np.array_equal(after.log_wealth, expected.log_wealth)
    assert np.array_equal(after.crossed_at, expected.crossed_at)
    with pytest.raises(OptimizerError, match="cap"):
        BettingState.start(1, epsilon=0.02, delta=0.05, caps=())
    with pytest.raises(OptimizerError, match="cap"):
        BettingState.from_json({**one.to_json(), "caps": [1.5]})
    with pytest.raises(OptimizerError, match="lengths"):
        BettingState.from_json({**one.to_json(), "caps": [0.5, 0.9]})
