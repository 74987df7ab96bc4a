"""Metric and param names: whatever the optimizer sends, MLflow accepts the name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from pipeline.registry import names


def accepted(name: str) -> bool:
    _validate_metric_name(name)  # raises MlflowException when refused
    _validate_param_name(name)
    return len(name) <= names.MAX_NAME_CHARS


@given(st.text(max_size=400))
def test_any_text_becomes_a_name_mlflow_accepts(raw: str) -> None:
    assert accepted(names.sanitize_name(raw))


def test_valid_names_are_kept_and_bad_ones_readable() -> None:
    assert names.sanitize_name("acme/qa/short/tokens_saved") == "acme/qa/short/tokens_saved"
    assert names.sanitize_name("em drop@δ=0.05") == "em drop___0.05"
    assert names.sanitize_name("/a//b/./c/../d/") == "a/b/_./c/_../d"
    assert names.sanitize_name("") == "_"
    assert names.sanitize_name("tenant:x") == "tenant_x"


def test_long_names_are_cut_with_a_hash_so_they_stay_distinct() -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    sa, sb = names.sanitize_name(a), names.sanitize_name(b)
    assert len(sa) == len(sb) == names.MAX_NAME_CHARS
    assert sa != sb


@given(st.dictionaries(st.text(max_size=30), st.floats(allow_nan=False), max_size=20))
def test_sanitizing_a_batch_never_merges_two_keys(values: dict[str, float]) -> None:
    out = names.sanitize_names(values)
    assert len(out) == len(values)
    assert sorted(out.values()) == sorted(values.values())
    assert all(accepted(k) for k in out)


def test_collisions_are_resolved_deterministically() -> None:
    first = names.sanitize_names({"a:b": 1.0, "a_b": 2.0})
    again = names.sanitize_names({"a_b": 2.0, "a:b": 1.0})
    assert first == again
    assert first["a_b"] == 2.0  # sorted first, keeps the plain name
    assert len(first) == 2


def test_segment_metric_names_round_trip() -> None:
    name = names.segment_metric_name("acme/qa/short", "em_drop_bound")
    assert name == "segment/acme/qa/short/em_drop_bound"
    assert names.split_segment_metric(name) == ("acme/qa/short", "em_drop_bound")
    assert names.split_segment_metric(names.segment_metric_name("global", "n")) == ("global", "n")
    assert names.split_segment_metric("tokens_saved") is None
    assert names.split_segment_metric("segment/only") is None
