"""Thin access to the MLflow tracking server and model registry."""

from __future__ import annotations

import os
from typing import Any

from pipeline.config import MlflowSettings
from pipeline.errors import RegistryError


def connect(settings: MlflowSettings) -> Any:
    """An ``MlflowClient`` for the configured server; raises if it does not answer.

    Credentials go through MLflow's own environment variables, which is how
    its client reads them; they are never logged.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if settings.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.username
    if settings.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.password.get_secret_value()
    # Fail fast instead of MLflow's default of retrying for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001  # MLflow raises many types for "unreachable"
        if getattr(exc, "error_code", None) in {"UNAUTHENTICATED", "PERMISSION_DENIED"}:
            who = repr(settings.username) if settings.username else "no user"
            msg = (
                f"MLflow at {settings.tracking_uri} refused the login of {who}: set "
                "PIPELINE_MLFLOW__USERNAME and PIPELINE_MLFLOW__PASSWORD (the embedded "
                "stack's service account is in .state/secrets after `pipeline up`)"
            )
            raise RegistryError(msg) from None
        msg = (
            f"MLflow at {settings.tracking_uri} is not reachable: "
            f"is `pipeline up` running? ({type(exc).__name__})"
        )
        raise RegistryError(msg) from None
    return client


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name))


def ensure_registered_model(client: Any, name: str, description: str = "") -> None:
    """Create the registered model ``name`` unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
