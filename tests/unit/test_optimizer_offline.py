"""The cold start: trajectory records to samples, probe cost, and one certification per segment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.optimizer import OptimizerError, SpecError, load_spec
from pipeline.optimizer.curve import request_losses
from pipeline.optimizer.offline import (
    OfflineSamples,
    calibrate,
    calibration_spec,
    leaf_key,
    samples_from_records,
    served,
)
from schemas import LoadMode
from schemas.trajectory import TrajectoryRecord

SPEC = load_spec(Path(__file__).resolve().parents[2] / "policies" / "earlystop.yaml")
MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")
RIGHT = ((16, 0.95, "Paris"), (32, 0.95, "Paris"), (48, 0.95, "Paris"), (64, 0.95, "Paris"))


def record(
    rid: str,
    points: tuple[tuple[int, float, str], ...] = RIGHT,
    *,
    segment: str = "acme/qa/short",
    gold: Any = "Paris",
    final: str = "Paris",
    tokens_full: int = 64,
    **extra: Any,
) -> TrajectoryRecord:
    return TrajectoryRecord.model_validate(
        {
            "request_id": rid,
            "segment": segment,
            "gold": gold,
            "tokens_full": tokens_full,
            "final_answer": final,
            "checkpoints": [{"tokens": t, "confidence": c, "answer": a} for t, c, a in points],
            **extra,
        }
    )


def easy(n: int, segment: str = "acme/qa/short", probe: int = 0) -> list[TrajectoryRecord]:
    """Requests whose every trial answer is right: stopping early loses nothing."""
    return [record(f"{segment}-{i}", segment=segment, probe_tokens=probe) for i in range(n)]


def small_samples() -> OfflineSamples:
    return samples_from_records(easy(20))


def test_records_become_one_batch_per_key_in_file_order_with_squad_em() -> None:
    records = [
        record("a", ((8, 0.2, "the  PARIS."), (16, 0.4, "Lyon")), tokens_full=20, final="Lyon"),
        record("b", ((8, 0.7, "Rome"),), segment="other/qa/long", gold=["Rome", "Roma"]),
        record("c", ((8, 0.9, "x"), (64, 0.9, "Paris")), probe_tokens=5),
    ]

    samples = samples_from_records(records)

    assert list(samples.batches) == ["acme/qa/short", "other/qa/long"]
    qa = samples.batches["acme/qa/short"]
    assert qa.tokens.tolist() == [[8, 16], [8, 64]]
    assert qa.confidence.tolist() == [[0.2, 0.4], [0.9, 0.9]]
    # SQuAD normalisation: case, punctuation, articles and spaces do not count.
    assert qa.correct.tolist() == [[True, False], [False, True]]
    # The full answer is final_answer, not the last checkpoint's.
    assert qa.full_correct.tolist() == [False, True]
    assert qa.full_tokens.tolist() == [20, 64]
    assert qa.length.tolist() == [2, 2]
    assert qa.probe_tokens is not None and qa.probe_tokens.tolist() == [0, 5]
    assert samples.batches["other/qa/long"].probe_tokens is None  # free confidence
    assert samples.batches["other/qa/long"].full_correct.tolist() == [False]
    assert len(samples) == 3
    assert samples.members("qa") == ["acme/qa/short", "other/qa/long"]
    assert samples.members("global") == ["acme/qa/short", "other/qa/long"]


@pytest.mark.parametrize(
    ("segment", "prompt", "key"),
    [
        ("math/sub", None, "math/sub/short"),
        ("math/sub", 300, "math/sub/medium"),
        ("sub", None, "default/sub/short"),
        ("acme/qa/long", 10, "acme/qa/long"),
    ],
)
def test_short_keys_map_to_tenant_task_and_length_bucket(
    segment: str, prompt: int | None, key: str
) -> None:
    extra: dict[str, Any] = {} if prompt is None else {"tokens_prompt": prompt}
    assert leaf_key(record("r", segment=segment, **extra)) == key


def test_the_loss_is_signed_an_early_answer_that_fixes_a_wrong_full_one_counts_in_favour() -> None:
    points = ((40, 0.9, "Paris"), (64, 0.9, "Lyon"))
    fixes = record("fix", points, final="Lyon")
    breaks = record("break", ((40, 0.9, "Lyon"), (64, 0.9, "Paris")))
    batch = samples_from_records([fixes, breaks]).batches["acme/qa/short"]

    assert request_losses(batch, (0.5, 1.0), 32).tolist() == [[-1, 0], [1, 0]]
    result = calibrate(calibration_spec(SPEC, min_samples=1), samples_from_records([fixes]))
    assert result.result("acme/qa/short", "normal").full_em == 0.0


def test_probe_tokens_are_spent_at_every_checkpoint_from_min_tokens_up_to_the_stop() -> None:
    points = ((8, 0.1, "x"), (16, 0.1, "x"), (24, 0.9, "Paris"), (32, 0.5, "Paris"))
    samples = samples_from_records([record("p", points, tokens_full=40, probe_tokens=3)])
    grid = SPEC.thresholds()
    at = [grid.index(theta) for theta in (0.8, 0.95, 1.0)]

    for min_tokens, probed in ((0, 4), (16, 3)):
        spec = calibration_spec(SPEC, min_tokens=min_tokens)
        net = samples.curve(spec, "global").tokens_used[at].tolist()
        gross = samples.curve(spec, "global", probes=False).tokens_used[at].tolist()
        stop = 24 + 3 * (probed - 1)  # the probes up to and including checkpoint 24
        # 0.8 stops at 24; 0.95 never stops but probes every checkpoint; 1.0 is off: no probe.
        assert net == [stop, 40 + 3 * probed, 40]
        assert gross == [24, 40, 40]


def test_the_saving_is_net_of_probes_and_probes_costlier_than_the_stop_turn_the_rule_off() -> None:
    spec = calibration_spec(SPEC, epsilon=0.05, min_samples=1)

    free = calibrate(spec, samples_from_records(easy(600)))
    cheap = calibrate(spec, samples_from_records(easy(600, probe=2)))
    dear = calibrate(spec, samples_from_records(easy(600, probe=40)))

    a, b, c = (x.result("acme/qa/short", "normal") for x in (free, cheap, dear))
    assert a.certified and b.certified
    assert a.saving == a.gross_saving == pytest.approx(0.5)  # stop at 32 of 64 tokens
    assert b.gross_saving == pytest.approx(0.5)
    # One probe, at 32 (min_tokens), the checkpoint it stops at.
    assert b.saving == pytest.approx(1 - (32 + 2) / 64)
    # 32 tokens plus a probe of 40 cost more than running to the end: off.
    assert (c.threshold, c.certified, c.saving, c.em_drop_bound) == (1.0, False, 0.0, 0.0)
    assert c.most_aggressive < 1.0
    assert c.note == "certified, but every certified threshold loses tokens net of probes"
    assert dear.body.segments["acme/qa/short"].thresholds["normal"] == 1.0


def test_a_certified_segment_gets_the_certified_threshold_saving_most_in_every_mode() -> None:
    spec = calibration_spec(SPEC, epsilon=0.05, min_samples=1)

    result = calibrate(spec, samples_from_records(easy(600)))

    for mode in MODES:
        r = result.result("acme/qa/short", mode)
        # Every confidence is 0.95: 0.5 .. 0.95 stop alike at 32 of 64 tokens, all certified.
        assert (r.threshold, r.most_aggressive, r.certified) == (0.5, 0.5, True)
        assert r.saving == r.gross_saving == pytest.approx(0.5)
        assert (r.population, r.guarantee, r.samples) == ("acme/qa/short", "segment", 600)
        assert (r.em_drop, r.em_drop_bound, r.epsilon) == (0.0, 0.05, 0.05)
        assert r.min_tokens == 32
    body = result.body.segments["acme/qa/short"]
    assert body.thresholds == dict.fromkeys(MODES, 0.5)
    assert (body.min_tokens, body.token_budget) == (32, 4096)
    assert set(result.body.segments) == {"acme/qa/short", "qa", "global"}
    assert result.proposal.body == result.body
    for d in result.proposal.decisions:
        assert d.threshold == result.result(d.key, d.mode).threshold
        assert not d.step_limited


def test_modes_with_different_epsilons_are_certified_each_at_its_own() -> None:
    spec = calibration_spec(SPEC, min_samples=1)  # offpeak 0.01, normal 0.02, peak 0.04

    result = calibrate(spec, samples_from_records(easy(300)))

    rows = {mode: result.result("acme/qa/short", mode) for mode in MODES}
    assert [rows[m].epsilon for m in MODES] == [0.01, 0.02, 0.04]
    # 300 loss-free samples certify a mean drop of 0.04, not yet one of 0.01.
    assert rows["peak"].certified and rows["peak"].threshold == 0.5
    assert not rows["offpeak"].certified and rows["offpeak"].threshold == 1.0
    assert rows["offpeak"].note == "no threshold certified"


def test_a_segment_with_too_few_samples_pools_into_its_parent_or_stays_off() -> None:
    spec = calibration_spec(SPEC, epsilon=0.05, min_samples=100)
    records = easy(600) + easy(20, segment="tiny/chat/short")

    result = calibrate(spec, samples_from_records(records))

    tiny = result.result("tiny/chat/short", "normal")
    # 20 samples < min_samples: its task "chat" has as few, so it rides on global.
    assert (tiny.population, tiny.guarantee, tiny.samples) == ("global", "pooled", 20)
    # Nothing has min_samples (400 in the spec): every rule is off.
    small = calibrate(calibration_spec(SPEC, epsilon=0.05), small_samples())
    for r in small.results:
        assert (r.threshold, r.certified, r.population, r.guarantee) == (1.0, False, None, "none")
        assert r.note == "too few samples to test"
    assert all(t == 1.0 for p in small.body.segments.values() for t in p.thresholds.values())
    # Enough to test, too few to certify: off.
    unproven = calibrate(calibration_spec(SPEC, epsilon=0.05, min_samples=1), small_samples())
    r = unproven.result("acme/qa/short", "normal")
    assert (r.threshold, r.certified, r.note) == (1.0, False, "no threshold certified")


def test_calibration_options_override_the_spec_and_lift_the_step_limit() -> None:
    spec = calibration_spec(SPEC, epsilon=0.1, delta=0.05, min_tokens=8, min_samples=10)

    assert [getattr(spec.load_modes, m).epsilon for m in MODES] == [0.1, 0.1, 0.1]
    assert (spec.risk.delta, spec.min_samples, spec.max_step) == (0.05, 10, 1.0)
    assert spec.settings_for("any/task/short").min_tokens == 8
    assert calibration_spec(SPEC) == SPEC.model_copy(update={"max_step": 1.0})
    with pytest.raises(SpecError, match="epsilon"):
        calibration_spec(SPEC, epsilon=0.7)
    with pytest.raises(SpecError, match="min_tokens exceeds token_budget"):
        calibration_spec(SPEC, min_tokens=10_000)


def test_replaying_a_policy_gives_its_net_saving_and_signed_em_drop() -> None:
    spec = calibration_spec(SPEC, epsilon=0.05, min_samples=1)
    train = samples_from_records(easy(600, probe=2))
    body = calibrate(spec, train).body
    points = ((40, 0.96, "Lyon"), (64, 0.9, "Paris"))
    test = samples_from_records([record("t0", probe_tokens=2), record("t1", points)])

    done = served(body, test, "peak")

    assert done.requests == 2
    # t0 stops at 32 after one probe of 2; t1 at 40, probes free, with a wrong answer.
    assert body.segments["acme/qa/short"].thresholds["peak"] == 0.5
    assert done.saving == pytest.approx(1 - (34 + 40) / 128)
    assert done.em_drop == pytest.approx(0.5)
    off = served(SPEC.default_policy, test)
    assert (off.saving, off.em_drop) == (0.0, 0.0)


def test_calibrating_nothing_is_refused() -> None:
    empty = samples_from_records([])

    assert (empty.batches, len(empty)) == ({}, 0)
    with pytest.raises(OptimizerError, match="no trajectories"):
        calibrate(SPEC, empty)


def test_min_tokens_candidates_share_delta_and_each_segment_takes_one_for_every_mode() -> None:
    spec = calibration_spec(SPEC, epsilon=0.05, min_samples=1)
    # acme: every trial answer right, so stopping at 16 tokens saves most.
    # beta: the answer at 16 tokens is wrong, so only 32 and up are safe.
    late = ((16, 0.95, "Lima"), (32, 0.95, "Paris"), (48, 0.95, "Paris"), (64, 0.95, "Paris"))
    records = easy(600) + [record(f"b-{i}", late, segment="beta/qa/short") for i in range(600)]
    result = calibrate(spec, samples_from_records(records), min_tokens=(16, 32))
    acme, beta = result.body.segments["acme/qa/short"], result.body.segments["beta/qa/short"]
    assert (acme.min_tokens, beta.min_tokens) == (16, 32)
    for mode in MODES:
        assert result.result("acme/qa/short", mode).min_tokens == 16
        assert result.result("acme/qa/short", mode).saving == pytest.approx(0.75)
        assert result.result("beta/qa/short", mode).min_tokens == 32
    # Two chains of tests: each runs at half of what one chain gets.
    one = calibrate(spec, samples_from_records(records), min_tokens=(16,))
    assert one.body.segments["beta/qa/short"].min_tokens == 16
    single = {d.delta for d in one.proposal.decisions if d.population}
    assert {d.delta for d in result.proposal.decisions if d.population} == {x / 2 for x in single}
    with pytest.raises(OptimizerError, match="exceeds a token budget"):
        calibrate(spec, samples_from_records(records), min_tokens=(8, 9000))
