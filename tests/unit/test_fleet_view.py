"""The fleet view from acks and publications: versions, refusals, who is behind and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.fleet import Publication, fleet_view, parse_duration
from schemas import PolicyAck

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def applied(node: str, version: int, minute: float, policy: str = "default") -> PolicyAck:
    return PolicyAck(
        node_id=node,
        policy_name=policy,
        version=version,
        ts=at(minute),
        status="applied",
        applied_at=at(minute),
    )


def refused(
    node: str, version: int, minute: float, reason: str, policy: str = "default"
) -> PolicyAck:
    return PolicyAck(
        node_id=node,
        policy_name=policy,
        version=version,
        ts=at(minute),
        status="refused",
        reason=reason,
    )


def published(*versions: tuple[int, float], policy: str = "default") -> list[Publication]:
    return [Publication(policy, v, at(minute)) for v, minute in versions]


def test_nodes_on_the_production_version_are_current_and_the_check_passes() -> None:
    acks = [applied("b", 1, 1), applied("a", 1, 1), applied("a", 2, 10), applied("b", 2, 11)]
    view = fleet_view(acks, published((1, 0), (2, 9)), at(20), max_behind=FIVE_MIN)

    assert [(r.node_id, r.version, r.applied_at, r.state) for r in view.rows] == [
        ("a", 2, at(10), "current"),
        ("b", 2, at(11), "current"),
    ]
    assert view.production == {"default": 2}
    assert view.ok and view.overdue == ()
    assert view.rows[0].behind_for(at(20)) is None


def test_a_node_behind_is_overdue_only_once_past_max_behind() -> None:
    acks = [applied("a", 1, 1), applied("b", 1, 1), applied("a", 2, 10)]
    pubs = published((1, 0), (2, 9))

    early = fleet_view(acks, pubs, at(13), max_behind=FIVE_MIN)
    late = fleet_view(acks, pubs, at(14.5), max_behind=FIVE_MIN)

    b_early, b_late = early.rows[1], late.rows[1]
    assert (b_early.node_id, b_early.version, b_early.production) == ("b", 1, 2)
    assert (b_early.state, b_early.behind_since) == ("behind", at(9))
    assert b_early.behind_for(at(13)) == timedelta(minutes=4)
    assert early.ok
    assert b_late.state == "overdue"
    assert late.overdue == ("b",) and not late.ok
    assert late.rows[0].state == "current"


def test_behind_since_counts_from_the_first_newer_version_still_on_the_topic() -> None:
    acks = [applied("a", 1, 1)]
    view = fleet_view(acks, published((1, 0), (2, 9), (3, 30)), at(31), max_behind=FIVE_MIN)

    (row,) = view.rows
    assert (row.production, row.behind_since, row.state) == (3, at(9), "overdue")
    # Compacted: only v3 is left, so the node is known behind since v3 only.
    compacted = fleet_view(acks, published((3, 30)), at(31), max_behind=FIVE_MIN)
    assert (compacted.rows[0].behind_since, compacted.rows[0].state) == (at(30), "behind")


def test_the_last_refusal_and_its_reason_are_shown_beside_the_applied_version() -> None:
    acks = [
        applied("a", 1, 1),
        refused("a", 2, 5, "signature does not verify"),
        refused("a", 3, 6, "exceeds this node's cap 4096"),
    ]
    view = fleet_view(acks, published((1, 0), (2, 4), (3, 5.5)), at(7), max_behind=FIVE_MIN)

    (row,) = view.rows
    assert (row.version, row.refused_version, row.refused_at) == (1, 3, at(6))
    assert row.refusal == "exceeds this node's cap 4096"
    assert (row.state, row.behind_since, row.last_seen) == ("behind", at(4), at(6))


def test_a_node_that_only_refused_production_is_behind_with_no_version() -> None:
    acks = [refused("x", 2, 3, "signature does not verify")]
    view = fleet_view(acks, published((1, 0), (2, 2)), at(10), max_behind=FIVE_MIN)

    (row,) = view.rows
    assert (row.version, row.applied_at, row.policy_name) == (None, None, "default")
    assert (row.state, row.behind_since) == ("overdue", at(2))
    assert row.refusal == "signature does not verify"


def test_without_an_applied_version_or_a_refusal_of_production_the_state_is_unknown() -> None:
    stale = [refused("x", 1, 3, "stale version 1: version 2 is applied")]
    view = fleet_view(stale, published((2, 0)), at(60), max_behind=FIVE_MIN)
    assert (view.rows[0].state, view.rows[0].behind_since) == ("unknown", None)
    assert view.ok


def test_a_refusal_of_another_policy_leaves_the_node_on_its_own() -> None:
    acks = [
        applied("a", 2, 1),
        refused("a", 9, 2, "this node follows 'default'", policy="other-fleet"),
    ]
    pubs = [*published((2, 0)), *published((9, 1.5), policy="other-fleet")]
    view = fleet_view(acks, pubs, at(60), max_behind=FIVE_MIN)

    (row,) = view.rows
    assert (row.policy_name, row.state, row.refused_policy) == ("default", "current", "other-fleet")
    assert view.production == {"default": 2, "other-fleet": 9}


def test_no_published_version_means_unknown_and_a_newer_applied_version_is_current() -> None:
    nothing = fleet_view([applied("a", 4, 1)], [], at(60), max_behind=FIVE_MIN)
    assert nothing.rows[0].state == "unknown" and nothing.ok
    ahead = fleet_view([applied("a", 4, 1)], published((3, 0)), at(60), max_behind=FIVE_MIN)
    assert ahead.rows[0].state == "current"


def test_acks_before_the_window_are_left_out_and_a_replay_never_hides_a_newer_version() -> None:
    acks = [applied("old", 1, 1), applied("a", 1, 20), applied("a", 2, 20)]
    view = fleet_view(acks, published((2, 19)), at(21), max_behind=FIVE_MIN, since=at(10))

    assert [(r.node_id, r.version) for r in view.rows] == [("a", 2)]


def test_json_rows_carry_iso_times_and_seconds_behind() -> None:
    view = fleet_view([applied("a", 1, 0)], published((2, 1)), at(3), max_behind=FIVE_MIN)

    data = view.rows[0].to_json(at(3))
    assert data["applied_at"] == "2025-06-01T12:00:00+00:00"
    assert (data["state"], data["behind_s"], data["production"]) == ("behind", 120.0, 2)
    assert data["refusal"] is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800), ("0.5m", 30)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5x", "-1m", "m", "1h30m"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_the_cli_refuses_a_bad_duration_before_reaching_kafka() -> None:
    from typer.testing import CliRunner

    from pipeline.cli._app import _register, app

    _register()
    done = CliRunner().invoke(app, ["fleet", "--max-behind", "soon"], env={"COLUMNS": "200"})
    assert done.exit_code == 2
    assert "expected a duration" in done.output
