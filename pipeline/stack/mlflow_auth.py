"""The embedded MLflow's basic-auth: its secrets, its configuration, its service account.

``pipeline up`` runs ``mlflow server --app-name basic-auth`` with an auth
database beside the tracking database (``<state>/mlflow/basic_auth.db``) and
``default_permission = READ``: every request must name a user, and a user
nobody granted anything can look but not write. Three secrets are generated
on the first start, each a 0600 file under ``<state>/secrets/`` (see
:mod:`pipeline.secret_store`), and reused by every later one:

- ``mlflow-admin-password``: the ``admin`` account MLflow creates on its
  first start (the server reads it from ``MLFLOW_AUTH_ADMIN_PASSWORD``, only
  then); ``pipeline up`` and ``pipeline reviewers`` log in with it;
- ``mlflow-controller-password``: the service account (``pipeline-controller``)
  the controller, the publisher, calibrate and the demo log in as;
- ``mlflow-flask-secret-key``: the key the auth app signs CSRF tokens with.

After the server answers, :func:`ensure_service_account` creates the service
account (or resets its password to the file's, which is how it is rotated)
and grants it MANAGE on the experiment and on the watched policies'
registered models that exist already; what it creates later it manages as
their creator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.errors import RegistryError, StackError
from pipeline.registry import auth
from pipeline.secret_store import MLFLOW_FLASK_SECRET, ensure_secret, secret_path

AUTH_DB = "basic_auth.db"
AUTH_CONFIG = "basic_auth.ini"


def auth_config_text(db: Path, admin_username: str) -> str:
    """MLflow's auth configuration (no secret in it: the admin password comes by environment)."""
    return (
        "[mlflow]\n"
        "# Written by `pipeline up`; any user may read (READ), grants give more.\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{db}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        "# A password check is a deliberately slow hash (PBKDF2) on every request;\n"
        "# remember a good login for a minute (one worker: a password change via\n"
        "# the API takes effect at once).\n"
        "auth_cache_ttl_seconds = 60\n"
    )


def write_auth_config(settings: Settings) -> Path:
    """Write ``<state>/mlflow/basic_auth.ini`` and return its path."""
    folder = settings.state_dir / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / AUTH_CONFIG
    path.write_text(auth_config_text(folder / AUTH_DB, settings.mlflow.admin_username))
    return path


def ensure_secrets(settings: Settings) -> tuple[Settings, list[str]]:
    """``settings`` with the admin and service passwords; the files generated now.

    A password set in the environment is kept (and no file is written for it).

    Raises:
        SecretFileError: an existing file is readable by others, or unreadable.
    """
    ml = settings.mlflow
    generated: list[str] = []
    update: dict[str, object] = {}
    if ml.admin_password is None:
        value, created = ensure_secret(settings.mlflow_admin_password_path)
        update["admin_password"] = value
        if created:
            generated.append(str(settings.mlflow_admin_password_path))
    if ml.password is None and ml.username in {None, ml.service_username}:
        value, created = ensure_secret(settings.mlflow_service_password_path)
        update.update(username=ml.service_username, password=value)
        if created:
            generated.append(str(settings.mlflow_service_password_path))
    _, created = ensure_secret(secret_path(settings.state_dir, MLFLOW_FLASK_SECRET))
    if created:
        generated.append(str(secret_path(settings.state_dir, MLFLOW_FLASK_SECRET)))
    if update:
        settings = settings.model_copy(update={"mlflow": ml.model_copy(update=update)})
    return settings, generated


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of the MLflow server process: its auth configuration and secrets."""
    ml = settings.mlflow
    if ml.admin_password is None:
        msg = "the MLflow admin password is missing: run `pipeline up` (it generates one)"
        raise StackError(msg)
    flask_key, _ = ensure_secret(secret_path(settings.state_dir, MLFLOW_FLASK_SECRET))
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(settings)),
        "MLFLOW_AUTH_ADMIN_USERNAME": ml.admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": ml.admin_password.get_secret_value(),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key.get_secret_value(),
    }


def admin_login(settings: Settings) -> auth.Login:
    """The admin's login, from the environment or the state folder's file.

    Raises:
        RegistryError: there is no admin password to use.
    """
    ml = settings.mlflow
    if ml.admin_password is None:
        msg = (
            "no MLflow admin password: set PIPELINE_MLFLOW__ADMIN_PASSWORD or run this as the "
            f"user who ran `pipeline up` (it keeps it in {settings.mlflow_admin_password_path})"
        )
        raise RegistryError(msg)
    return auth.Login(ml.tracking_uri, ml.admin_username, ml.admin_password)


def ensure_service_account(settings: Settings) -> str:
    """Create or repair the service account and its grants; what was done, in words.

    Raises:
        StackError: MLflow refused the admin's login or a step.
    """
    ml = settings.mlflow
    if ml.password is None or ml.username != ml.service_username:
        return f"service account {ml.service_username}: not managed here (another login is set)"
    db = settings.state_dir / "mlflow" / AUTH_DB
    if db.exists():
        db.chmod(0o600)  # it holds the users' password hashes
    admin = admin_login(settings)
    service = auth.Login(ml.tracking_uri, ml.service_username, ml.password)
    try:
        if auth.get_user(admin, ml.service_username) is None:
            auth.create_user(admin, ml.service_username, ml.password)
            done = "created"
        else:
            try:
                auth.current_user(service)
                done = "present"
            except auth.AuthRefused:
                auth.set_password(admin, ml.service_username, ml.password)
                done = "password reset to the stored one"
        for kind, resource in _service_resources(service, settings):
            auth.grant(admin, ml.service_username, kind, resource, "MANAGE")
    except auth.AuthRefused as exc:
        if exc.status == 401:
            msg = (
                f"MLflow refused the admin login ({ml.admin_username}): its auth database "
                f"{settings.state_dir / 'mlflow' / AUTH_DB} was created with another admin "
                f"password than {settings.mlflow_admin_password_path} holds (or "
                "PIPELINE_MLFLOW__ADMIN_PASSWORD says); see the README's Security section"
            )
            raise StackError(msg) from None
        raise StackError(str(exc)) from None
    except RegistryError as exc:
        msg = f"setting up the MLflow service account failed: {exc}"
        raise StackError(msg) from None
    return f"service account {ml.service_username}: {done}"


def _service_resources(service: auth.Login, settings: Settings) -> list[tuple[str, str]]:
    # What exists already and the service account must write: the experiment and the
    # watched policies' registered models (ones it creates later it manages as creator).
    found: list[tuple[str, str]] = []
    experiment = _lookup(
        service,
        "/api/2.0/mlflow/experiments/get-by-name",
        {"experiment_name": settings.mlflow.experiment},
    )
    if experiment is not None:
        found.append(("experiment", str(experiment.get("experiment", {}).get("experiment_id"))))
    for policy in settings.control.policy_names():
        model = settings.control.model_name(policy)
        if _lookup(service, "/api/2.0/mlflow/registered-models/get", {"name": model}) is not None:
            found.append(("registered_model", model))
    return found


def _lookup(login: auth.Login, path: str, params: dict[str, str]) -> dict[str, Any] | None:
    try:
        return auth.request(login, "GET", path, params=params)
    except auth.AuthRefused:
        raise
    except RegistryError as exc:
        if "answered 404" in str(exc):
            return None
        raise
