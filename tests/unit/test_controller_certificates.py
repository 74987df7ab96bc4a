"""The controller's certificate file: atomic round trip, and a clear restart when unreadable."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from pipeline.controller.certificates import Saved, book_path, load_book, save_book
from pipeline.optimizer.certify import CertificateBook, advance
from tests.unit._optimizer_data import SegmentModel, spec_with

SPEC = spec_with(risk={"method": "anytime", "loss": "signed", "split": "none"})


def test_a_saved_book_reads_back_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    book, _ = advance(
        CertificateBook.empty(SPEC), SPEC, {"acme/qa/short": SegmentModel().sample(500, rng)}
    )
    path = book_path(tmp_path, "default")
    mark = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    save_book(path, Saved(book, mark))
    again = load_book(path, SPEC)
    assert again.watermark == mark
    assert again.book.to_json() == book.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["certificates.json"]  # no temp file left


def test_an_unreadable_book_restarts_the_certificates_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = book_path(tmp_path, "default")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with caplog.at_level(logging.ERROR):
        saved = load_book(path, SPEC)
    assert saved.watermark is None and not saved.book.populations
    assert "every certificate restarts" in caplog.text
