"""The demo's cold start: a simulated history seeds the controller's certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipeline.controller.certificates import book_path, load_book
from pipeline.demo.history import history_batches, seed_certificates
from pipeline.optimizer import load_spec
from pipeline.sim.scenario import scenario

SPEC = Path(__file__).resolve().parents[2] / "policies" / "earlystop.yaml"
START = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_history_is_another_stream_of_the_same_segments() -> None:
    scen = scenario("drift", drift_at=10)
    batches = history_batches(scen, seed=0, per_segment=50)
    assert sorted(batches) == sorted(s.key for s in scen.segments)
    assert all(len(batch) == 50 for batch in batches.values())
    again = history_batches(scen, seed=0, per_segment=50)
    other = history_batches(scen, seed=1, per_segment=50)
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
