"""Create the MLflow SQLite database atomically before the server first starts.

`mlflow server` migrates an empty database on start; killed half-way (a failed
`pipeline up` stops what it started), it leaves a database it cannot open
again ("table jobs already exists"). Building the schema in a temporary file
and renaming it into place means the server only ever sees a complete one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.errors import StackError


def ensure_database(db: Path, artifacts: Path, timeout_s: float = 120.0) -> bool:
    """Create ``db`` with MLflow's schema unless it exists; True if created now."""
    if db.exists():
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(db.name + ".init")
    tmp.unlink(missing_ok=True)
    # A child process keeps MLflow's heavy imports out of the CLI.
    result = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [sys.executable, "-m", "pipeline.stack.mlflow_store", str(tmp), str(artifacts)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        msg = f"creating the MLflow database {db} failed: " + " | ".join(detail)
        raise StackError(msg)
    os.replace(tmp, db)
    return True


def _create(db: Path, artifacts: Path) -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    uri = f"sqlite:///{db}"
    tracking = TrackingStore(uri, str(artifacts))  # type: ignore[no-untyped-call]  # MLflow is untyped
    RegistryStore(uri)  # type: ignore[no-untyped-call]  # MLflow is untyped
    tracking.engine.dispose()


if __name__ == "__main__":
    _create(Path(sys.argv[1]), Path(sys.argv[2]))
