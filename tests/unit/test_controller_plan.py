"""Pure glue of the controller: pairing canary/production requests and cycle decisions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.controller import plan
from pipeline.controller.reader import Observation, batches_from_rows, newest_model_only, pair_arms
from pipeline.node.verify import Limits
from pipeline.optimizer import CanaryVerdict
from pipeline.optimizer.sequential import Evidence
from pipeline.registry import carrier, names, tags
from schemas import PolicyBody, SegmentPolicy
from tests.unit._optimizer_data import spec_with


def obs(bucket: str, arm: str, em: bool | None = True, share: float = 0.1) -> Observation:
    return Observation((bucket,), arm, em is not None, em, share, False)


def body(threshold: float, budget: int = 4096) -> PolicyBody:
    policy = SegmentPolicy(thresholds={"normal": threshold}, min_tokens=8, token_budget=budget)
    return PolicyBody(segments={"global": policy}, exploration_share=0.05)


def test_pairs_stay_within_a_bucket_in_arrival_order_and_leftovers_are_dropped() -> None:
    seen = [
        obs("m1", "candidate", True, 0.1),
        obs("m1", "production", False, 0.2),
        obs("m1", "candidate", False, 0.3),  # no production partner in m1
        obs("m2", "production", True, 0.4),
        obs("m2", "candidate", True, 0.5),
    ]
    paired = pair_arms(seen)
    assert paired.em == ((1.0, 1.0), (0.0, 1.0))
    assert paired.tokens == ((0.1, 0.5), (0.2, 0.4))
    assert paired.em_pairs == 2


def test_unlabeled_requests_pair_for_tokens_but_not_for_em() -> None:
    paired = pair_arms([obs("m", "candidate", None), obs("m", "production", True)])
    assert paired.em == ((), ())
    assert paired.tokens == ((0.1,), (0.1,))


@given(st.lists(st.tuples(st.sampled_from("ab"), st.booleans(), st.booleans()), max_size=60))
def test_which_requests_pair_never_depends_on_their_outcomes(
    rows: list[tuple[str, bool, bool]],
) -> None:
    arms = ["candidate" if a == "a" else "production" for a, _, _ in rows]
    first = pair_arms([obs("m", arm, em) for arm, (_, em, _) in zip(arms, rows, strict=True)])
    other = pair_arms([obs("m", arm, flip) for arm, (_, _, flip) in zip(arms, rows, strict=True)])
    assert (
        len(first.em[0])
        == len(other.em[0])
        == min(arms.count("candidate"), arms.count("production"))
    )


def test_exploration_rows_become_a_batch_and_partly_labeled_requests_are_dropped() -> None:
    rows = [
        ("acme", "qa", "short", "r1", 0, 10, 0.5, False, True, 30),
        ("acme", "qa", "short", "r1", 1, 20, 1.0000001, True, True, 30),
        ("acme", "qa", "short", "r2", 0, 10, 0.9, None, True, 30),
        ("beta", "qa", "long", "r3", 0, 50, 0.7, True, False, 40),
    ]
    batches = batches_from_rows(rows)
    assert sorted(batches) == ["acme/qa/short", "beta/qa/long"]
    acme = batches["acme/qa/short"]
    assert len(acme) == 1
    assert acme.tokens[0].tolist() == [10, 20]
    assert acme.confidence[0, 1] == 1.0
    assert acme.correct[0].tolist() == [False, True]
    assert bool(acme.full_correct[0]) and int(acme.full_tokens[0]) == 30
    assert not bool(batches["beta/qa/long"].full_correct[0])


def test_probe_tokens_of_a_request_become_its_cost_per_checkpoint() -> None:
    rows = [
        ("acme", "qa", "short", "r1", 0, 8, 0.5, False, True, 24, 18),
        ("acme", "qa", "short", "r1", 1, 16, 0.9, True, True, 24, 18),
        ("acme", "qa", "short", "r2", 0, 8, 0.9, True, True, 8, 0),
    ]
    batch = batches_from_rows(rows)["acme/qa/short"]
    assert batch.probe_tokens is not None
    assert batch.probe_tokens.tolist() == [9, 0]
    free = batches_from_rows([(*row[:10], 0) for row in rows])["acme/qa/short"]
    assert free.probe_tokens is None


def test_a_model_swap_restarts_calibration_of_the_keys_it_serves() -> None:
    def row(key: str, rid: str, model: str, ts: int) -> tuple[object, ...]:
        tenant, task, bucket = key.split("/")
        return (tenant, task, bucket, rid, 0, 10, 0.9, True, True, 30, 0, model, ts)

    rows = [
        row("acme/qa/short", "r1", "v1", 1),
        row("acme/qa/short", "r2", "v2", 3),  # the swap
        row("acme/qa/short", "r3", "v1", 2),  # older than the swap: dropped
        row("beta/qa/long", "r4", "v1", 5),  # another key still on v1: kept
    ]
    kept = newest_model_only(rows)
    assert [r[3] for r in kept] == ["r2", "r4"]
    assert all(len(r) == 11 for r in kept)
    batches = batches_from_rows(kept)
    assert len(batches["acme/qa/short"]) == 1 and len(batches["beta/qa/long"]) == 1


@pytest.mark.parametrize(
    ("within", "switch", "share", "expected"),
    [
        (True, True, 0.0, "production"),
        (True, True, 0.05, "canary"),
        (True, False, 0.05, "pending"),
        (False, True, 0.0, "pending"),
    ],
)
def test_route(within: bool, switch: bool, share: float, expected: str) -> None:
    assert plan.route(within_bounds=within, auto_approve=switch, canary_share=share) == expected


def test_canary_body_carries_both_policies_and_ends_either_way() -> None:
    both = carrier.canary_body(body(0.95), body(0.9), 7, 0.05)
    assert carrier.running_canary(both) == 7
    assert carrier.base_body(both) == body(0.95)
    assert carrier.promoted_body(both) == body(0.9)
    assert carrier.running_canary(body(0.95)) is None
    with pytest.raises(ValueError, match="no canary"):
        carrier.promoted_body(body(0.95))


def test_budgets_above_the_nodes_cap_are_refused() -> None:
    spec = spec_with()
    assert plan.budget_problem(spec, 4096) is None
    problem = plan.budget_problem(spec, 1024)
    assert problem and "max_token_budget 1024" in problem
    assert plan.body_problem(body(0.9, budget=8192), Limits(max_token_budget=4096))
    assert plan.body_problem(body(0.9), Limits(max_token_budget=4096)) is None


def test_verdict_tags_record_state_reason_and_evidence() -> None:
    evidence = Evidence("em", 300, 0.45, 0.02, 1e6, 120, 0.01, None)
    found = tags.verdict_tags(
        CanaryVerdict("rollback", "guardrail breached: em", (evidence,)), "rolled_back"
    )
    assert found[names.T_CANARY_STATE] == "rolled_back"
    assert found[names.T_CANARY_VERDICT].startswith("rollback: guardrail breached")
    assert "em: 300 pairs, diff +0.4500" in found[names.T_CANARY_EVIDENCE]
    assert np.isfinite(evidence.harm_e)


def test_the_disagreement_bound_is_never_below_the_true_loss() -> None:
    from itertools import product

    from pipeline.controller.reader import disagreement_rows
    from pipeline.stream.em import exact_match

    answers = ("Paris", "paris.", "Lima", "The Lima", "")
    for early, full, gold in product(answers, answers, ("Paris", "Lima", "Oslo")):
        row = ("acme", "qa", "short", "r", 0, 8, 0.9, early, full, 16, 0, "m", 1)
        (bounded,) = disagreement_rows([row])
        assert bounded[7:9] == (bounded[7], True) and len(bounded) == len(row)
        bound = int(bounded[8]) - int(bounded[7])
        signed = int(exact_match(full, [gold])) - int(exact_match(early, [gold]))
        one_sided = int(exact_match(full, [gold]) and not exact_match(early, [gold]))
        assert bound >= signed and bound >= one_sided
