"""Reading policy versions from the MLflow registry: records, aliases, the policy itself."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.errors import RegistryError
from pipeline.registry import names
from pipeline.registry.errors import PolicyArtifactError
from pipeline.registry.transitions import VersionView
from schemas import PolicyBody


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One model version of a policy family, as the review commands show it."""

    model_name: str
    version: int
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    run_id: str | None = None
    source: str = ""
    created_at: datetime | None = None
    description: str = ""

    @property
    def review_state(self) -> str | None:
        """The ``review_state`` tag, or None when missing."""
        return self.tags.get(names.T_REVIEW_STATE)

    def view(self) -> VersionView:
        """The part the review rules look at."""
        return VersionView(self.version, self.status, self.tags, self.aliases)


def is_missing(exc: BaseException) -> bool:
    """True when MLflow says the model, version or alias does not exist."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's and HTTP errors into one :class:`RegistryError` line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        msg = f"{what}: {exc.message}"
        raise RegistryError(msg) from None
    except OSError as exc:  # requests' ConnectionError and timeouts derive from it
        msg = f"{what}: MLflow is not reachable ({type(exc).__name__})"
        raise RegistryError(msg) from None


def _record(mv: Any, aliases: tuple[str, ...] | None = None) -> VersionRecord:
    ts = getattr(mv, "creation_timestamp", None)
    return VersionRecord(
        model_name=str(mv.name),
        version=int(mv.version),
        status=str(mv.status),
        tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
        aliases=tuple(mv.aliases or ()) if aliases is None else aliases,
        run_id=mv.run_id or None,
        source=str(mv.source or ""),
        created_at=datetime.fromtimestamp(ts / 1000, UTC) if ts else None,
        description=str(mv.description or ""),
    )


def aliases(client: Any, model_name: str) -> dict[str, int]:
    """Alias -> version of the registered model (empty when the model does not exist)."""
    try:
        model = client.get_registered_model(model_name)
    except Exception as exc:
        if is_missing(exc):
            return {}
        raise
    return {str(alias): int(version) for alias, version in (model.aliases or {}).items()}


def get_version(client: Any, model_name: str, version: int) -> VersionRecord:
    """One version with its tags and aliases.

    Raises:
        RegistryError: if it does not exist.
    """
    try:
        mv = client.get_model_version(model_name, str(version))
    except Exception as exc:
        if is_missing(exc):
            msg = f"{model_name} has no version {version}"
            raise RegistryError(msg) from None
        raise
    return _record(mv)


def list_versions(client: Any, model_name: str) -> list[VersionRecord]:
    """Every version, newest first, with aliases (search results lack them)."""
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases(client, model_name).items():
        by_version.setdefault(version, []).append(alias)
    found = client.search_model_versions(f"name = '{model_name}'")
    records = [_record(mv, tuple(sorted(by_version.get(int(mv.version), [])))) for mv in found]
    return sorted(records, key=lambda r: r.version, reverse=True)


def resolve(client: Any, model_name: str, ref: str) -> int:
    """A version number from ``ref``: a number, or an alias such as ``production``.

    Raises:
        RegistryError: if the alias is not set.
    """
    if ref.isdigit():
        return int(ref)
    found = aliases(client, model_name).get(ref)
    if found is None:
        msg = f"{model_name} has no alias {ref!r}"
        raise RegistryError(msg)
    return found


def policy_sha256(raw: bytes) -> str:
    """The digest recorded on a version for its policy file."""
    return hashlib.sha256(raw).hexdigest()


def load_policy(client: Any, record: VersionRecord) -> PolicyBody:
    """Download the policy of ``record`` from its registered model and validate it.

    The file is read from the version's source (the logged pyfunc model), and
    must match the ``policy_sha256`` tag written at registration.

    Raises:
        PolicyArtifactError: if it is missing, altered or not a valid PolicyBody.
    """
    import mlflow.artifacts

    uri = client.get_model_version_download_uri(record.model_name, str(record.version))
    with tempfile.TemporaryDirectory(prefix="policy-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{uri}/artifacts/{names.POLICY_FILE}",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            raw = Path(local).read_bytes()
        except Exception as exc:
            if is_missing(exc) or isinstance(exc, FileNotFoundError):
                msg = f"{record.model_name} v{record.version} has no policy artifact at {uri}"
                raise PolicyArtifactError(msg) from None
            raise
    expected = record.tags.get(names.T_POLICY_SHA256)
    if expected != policy_sha256(raw):
        msg = (
            f"{record.model_name} v{record.version}: policy file digest does not match "
            f"its {names.T_POLICY_SHA256} tag ({expected or 'missing'})"
        )
        raise PolicyArtifactError(msg)
    try:
        return PolicyBody.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        msg = f"{record.model_name} v{record.version}: invalid policy: {where}: {first['msg']}"
        raise PolicyArtifactError(msg) from None


def load_review_page(client: Any, record: VersionRecord) -> str | None:
    """The Markdown review page logged with ``record``'s run (None: it has none)."""
    import mlflow.artifacts

    if record.run_id is None:
        return None
    logged = {a.path for a in client.list_artifacts(record.run_id, names.REVIEW_DIR)}
    if names.REVIEW_MD not in logged:
        return None
    with tempfile.TemporaryDirectory(prefix="review-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=record.run_id,
            artifact_path=names.REVIEW_MD,
            dst_path=tmp,
            tracking_uri=client.tracking_uri,
        )
        return Path(local).read_text(encoding="utf-8")
