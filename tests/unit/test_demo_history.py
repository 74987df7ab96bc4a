"""The demo's cold start: a simulated history seeds the controller's certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.controller.certificates import book_path, load_book
from pipeline.demo.history import history_batches, seed_certificates
from pipeline.optimizer import load_spec
from pipeline.sim.scenario import scenario

SPEC = Path(__file__).resolve().parents[2] / "policies" / "earlystop.yaml"
START = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_history_is_another_stream_of_the_same_segments() -> None:
    scen = scenario("drift", drift_at=10)
    budgets = {s.key: s.token_budget for s in scen.segments}  # short: equal widths
    batches = history_batches(scen, seed=0, per_segment=50, budgets=budgets)
    assert sorted(batches) == sorted(s.key for s in scen.segments)
    assert all(len(batch) == 50 for batch in batches.values())
    again = history_batches(scen, seed=0, per_segment=50, budgets=budgets)
    other = history_batches(scen, seed=1, per_segment=50, budgets=budgets)
    key = scen.segments[0].key
    assert (batches[key].tokens == again[key].tokens).all()  # seeded
    assert not (batches[key].tokens == other[key].tokens).all()


def test_seeded_certificates_are_where_the_controller_reads_them(tmp_path: Path) -> None:
    scen = scenario("drift", drift_at=10)
    seeded = seed_certificates(tmp_path, SPEC, scen, seed=0, per_segment=1000, start=START)
    spec = load_spec(SPEC)
    assert seeded.path == book_path(tmp_path, spec.name)
    saved = load_book(seeded.path, spec)
    assert saved.watermark == START  # live traffic is read from the start on
    assert seeded.samples == 18 * 1000
    # 1,000 samples per segment certify thresholds below 1.0 in most populations.
    assert seeded.certified >= 10
    leaf = saved.book.populations[scen.segments[0].key]
    assert leaf.curve.n == 1000


def test_the_history_is_cut_where_live_traffic_is(tmp_path: Path) -> None:
    # Live requests are cut at the policy's budget (4096 in the shipped spec); a history
    # cut at the scenario's own (256 for a short bucket) is another stream, and the
    # change detectors read the difference as drift in the segments whose answers run long.
    from pipeline.sim.oracle import sample_segment

    scen = scenario("drift", drift_at=10)
    key = "acme/math/short"
    live = np.array(
        [lat.tokens[-1] for lat in sample_segment(scen, key, 7, 600, at_index=0, budget=4096)]
    )
    spec = load_spec(SPEC)
    budgets = {s.key: spec.settings_for(s.key).token_budget for s in scen.segments}
    history = history_batches(scen, seed=0, per_segment=600, budgets=budgets)[key].full_tokens
    scenario_own = {s.key: s.token_budget for s in scen.segments}
    own = history_batches(scen, seed=0, per_segment=600, budgets=scenario_own)[key].full_tokens
    se = np.hypot(live.std(), history.std()) / np.sqrt(600)
    assert abs(history.mean() - live.mean()) < 4 * se
    assert live.mean() - own.mean() > 10 * se  # the old cut: a different stream
    seeded = seed_certificates(tmp_path, SPEC, scen, seed=0, per_segment=600, start=START)
    leaf = load_book(seeded.path, spec).book.populations[key]
    assert leaf.curve.full_tokens == int(history.sum())
