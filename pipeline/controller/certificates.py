"""The controller's certificate book on disk, with the watermark of what it has read.

The anytime promise needs every exploration request fed to the certificates
once, in request order; the book and the request time up to which it has read
(the watermark) are saved together, atomically, under
``<state_dir>/controller/<policy>/certificates.json``. Losing the file
restarts every certificate from nothing: nothing unsafe is deployed because
of it (thresholds go back to what the new certificates support), but the
restarted certificates spend their δ again; keep the state folder on a
persistent volume.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline.optimizer import OptimizerError, PolicySpec
from pipeline.optimizer.certify import CertificateBook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Saved:
    """A book and the request time it has read up to (None: nothing read yet)."""

    book: CertificateBook
    watermark: datetime | None


def book_path(state_dir: Path, policy_name: str) -> Path:
    """Where the certificates of ``policy_name`` are kept."""
    return state_dir / "controller" / policy_name / "certificates.json"


def load_book(path: Path, spec: PolicySpec) -> Saved:
    """The saved book, or an empty one when there is none or it cannot be read (logged)."""
    if not path.exists():
        return Saved(CertificateBook.empty(spec), None)
    try:
        data = json.loads(path.read_text())
        watermark = datetime.fromisoformat(data["watermark"]) if data["watermark"] else None
        return Saved(CertificateBook.from_json(data["book"]), watermark)
    except (OSError, ValueError, KeyError, TypeError, OptimizerError) as exc:
        log.error("certificates at %s unreadable (%s): every certificate restarts", path, exc)
        return Saved(CertificateBook.empty(spec), None)


def save_book(path: Path, saved: Saved) -> None:
    """Write ``saved`` atomically (a reader sees the old file or the new one, never half)."""
    data = {
        "watermark": saved.watermark.isoformat() if saved.watermark else None,
        "book": saved.book.to_json(),
    }
    write_json_atomically(path, data)


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
