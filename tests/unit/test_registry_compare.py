"""Diffs and review tables of policies (pure)."""

from __future__ import annotations

from pipeline.registry import names
from pipeline.registry.compare import diff_policies
from pipeline.registry.report import segment_rows, tag_rows, value_rows
from schemas import PolicyBody, SegmentPolicy


def seg(normal: float, peak: float | None = None, budget: int = 512) -> SegmentPolicy:
    thresholds = {"normal": normal} if peak is None else {"normal": normal, "peak": peak}
    return SegmentPolicy(thresholds=thresholds, min_tokens=8, token_budget=budget)


def body(**segments: SegmentPolicy) -> PolicyBody:
    return PolicyBody(
        segments={k.replace("__", "/"): s for k, s in segments.items()}, exploration_share=0.05
    )


def test_diff_lists_changed_thresholds_added_segments_and_policy_fields() -> None:
    a = body(**{"global": seg(0.9), "qa": seg(0.8, 0.7)})
    b = body(**{"global": seg(0.9), "qa": seg(0.75, 0.7), "acme__qa__short": seg(0.6)})
    changes = {(c.segment, c.field): c for c in diff_policies(a, b)}
    assert set(changes) == {
        ("qa", "threshold.normal"),
        ("acme/qa/short", "threshold.normal"),
        ("acme/qa/short", "min_tokens"),
        ("acme/qa/short", "token_budget"),
    }
    normal = changes[("qa", "threshold.normal")]
    assert (normal.before, normal.after) == ("0.8", "0.75")
    assert normal.delta is not None and abs(normal.delta + 0.05) < 1e-12
    added = changes[("acme/qa/short", "threshold.normal")]
    assert (added.before, added.after, added.delta) == ("-", "0.6", None)


def test_diff_of_equal_policies_is_empty_unless_everything_is_asked() -> None:
    a = body(**{"global": seg(0.9)})
    assert diff_policies(a, a) == []
    full = diff_policies(a, a, everything=True)
    assert {c.field for c in full} >= {"threshold.normal", "min_tokens", "exploration_share"}
    assert all(c.delta in (0.0, None) for c in full)


def test_segment_rows_join_thresholds_and_segment_metrics() -> None:
    policy = body(**{"global": seg(0.9, 0.85), "acme__qa__short": seg(0.6)})
    metrics = {
        names.segment_metric_name("acme/qa/short", "tokens_saved"): 0.31,
        names.segment_metric_name("global", "n"): 1200.0,
        "overall": 1.0,
    }
    columns, rows = segment_rows(policy, metrics)
    assert columns == [
        "segment", "offpeak", "normal", "peak", "min_tokens", "token_budget", "n", "tokens_saved",
    ]  # fmt: skip
    assert rows[0] == ["acme/qa/short", "-", "0.6", "-", "8", "512", "-", "0.31"]
    assert rows[1] == ["global", "-", "0.9", "0.85", "8", "512", "1200", "-"]


def test_tag_rows_put_review_tags_first_and_value_rows_skip_segments() -> None:
    rows = tag_rows({"zz": "1", "who": "ann", "review_state": "approved"})
    assert rows == [("review_state", "approved"), ("who", "ann"), ("zz", "1")]
    metrics = {"a": 0.5, names.segment_metric_name("global", "n"): 3.0}
    assert value_rows(metrics, skip_segments=True) == [("a", "0.5")]


def test_diff_shows_a_segment_s_own_exploration_share() -> None:
    a = body(**{"global": seg(0.9), "qa": seg(0.8)})
    floored = seg(0.8).model_copy(update={"exploration_share": 0.02})
    b = body(**{"global": seg(0.9), "qa": floored})
    changes = {(c.segment, c.field): c for c in diff_policies(a, b)}
    assert set(changes) == {("qa", "exploration_share")}
    assert (
        changes["qa", "exploration_share"].before,
        changes["qa", "exploration_share"].after,
    ) == (
        "-",
        "0.02",
    )
