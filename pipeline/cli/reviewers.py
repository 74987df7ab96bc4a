"""`pipeline reviewers add|remove|password`: who may approve policy versions in MLflow.

A reviewer is an MLflow user holding MANAGE on a policy's registered model
(approve, reject, roll back: rejecting removes the ``candidate`` alias,
which MLflow allows only with MANAGE) and EDIT on the experiment (a canary
approval and a rollback log a run). Everyone else reads. These commands log
in as the MLflow admin: ``PIPELINE_MLFLOW__ADMIN_PASSWORD``, or the file
``pipeline up`` generated under ``<state>/secrets/``.
"""

from __future__ import annotations

import sys

import typer
from pydantic import SecretStr

from pipeline.cli._app import app, console
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, RegistryError

reviewers_app = typer.Typer(
    help="MLflow users who may approve policy versions (needs the MLflow admin password).",
    no_args_is_help=True,
)
app.add_typer(reviewers_app, name="reviewers")

POLICIES = typer.Option(
    None, "--policy", "-p", help="Policy to review (repeat; default: every watched policy)."
)
PASSWORD_STDIN = typer.Option(
    False, "--password-stdin", help="Read the password from stdin instead of generating one."
)


def _grants(settings: Settings, policies: list[str] | None) -> list[tuple[str, str, str]]:
    """(resource type, id, level) a reviewer of ``policies`` needs."""
    from pipeline.registry import auth
    from pipeline.stack.mlflow_auth import admin_login

    control = settings.control
    grants = [
        ("registered_model", control.model_name(p), "MANAGE")
        for p in (policies or control.policy_names())
    ]
    try:
        found = auth.request(
            admin_login(settings),
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": settings.mlflow.experiment},
        )
    except RegistryError as exc:
        if "answered 404" not in str(exc):
            raise
        found = {}
    experiment = found.get("experiment", {}).get("experiment_id")
    if experiment is not None:
        grants.append(("experiment", str(experiment), "EDIT"))
    return grants


def _password(from_stdin: bool) -> tuple[SecretStr, bool]:
    from pipeline.secret_store import new_password

    if not from_stdin:
        return new_password(), True
    value = sys.stdin.readline().strip()
    if len(value) < 12:
        msg = "the password read from stdin is shorter than 12 characters"
        raise ConfigError(msg)
    return SecretStr(value), False


@reviewers_app.command("add")
def add(
    name: str = typer.Argument(..., help="The reviewer's MLflow user name."),
    policies: list[str] | None = POLICIES,
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Create the user (unless it exists) and let it review the policies.

    A generated password is printed once, here; it is stored nowhere else.
    """
    from pipeline.registry import auth
    from pipeline.stack.mlflow_auth import admin_login

    settings = load_settings()
    if name in {settings.mlflow.service_username, settings.mlflow.admin_username}:
        msg = f"{name} is a pipeline account, not a reviewer"
        raise ConfigError(msg)
    admin = admin_login(settings)
    created = auth.get_user(admin, name) is None
    shown: SecretStr | None = None
    if created:
        password, generated = _password(password_stdin)
        auth.create_user(admin, name, password)
        shown = password if generated else None
    grants = _grants(settings, policies)
    for kind, resource, level in grants:
        auth.grant(admin, name, kind, resource, level)
        console.print(f"{name}: {level} on {kind} {resource}")
    if shown is not None:
        console.print(
            f"created MLflow user {name}; its password (shown once, give it to the reviewer):",
            highlight=False,
        )
        typer.echo(shown.get_secret_value())
    elif created:
        console.print(f"created MLflow user {name} with the password from stdin")


@reviewers_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="The reviewer's MLflow user name."),
    policies: list[str] | None = POLICIES,
) -> None:
    """Take the reviewer permissions away (the user keeps reading, as everyone)."""
    from pipeline.registry import auth
    from pipeline.stack.mlflow_auth import admin_login

    settings = load_settings()
    admin = admin_login(settings)
    for kind, resource, _ in _grants(settings, policies):
        auth.revoke(admin, name, kind, resource)
        console.print(f"{name}: no longer holds a grant on {kind} {resource}")


@reviewers_app.command("password")
def password(
    name: str = typer.Argument(..., help="An MLflow user, the admin or the service account."),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Give a user a new password (rotation).

    For the admin and the controller's service account the new password is
    written to its file under ``<state>/secrets/`` (never printed): restart the
    controller afterwards. For anyone else a generated one is printed once.
    """
    from pipeline.registry import auth
    from pipeline.secret_store import replace_secret
    from pipeline.stack.mlflow_auth import admin_login

    settings = load_settings()
    ml = settings.mlflow
    admin = admin_login(settings)
    new, generated = _password(password_stdin)
    files = {
        ml.admin_username: settings.mlflow_admin_password_path,
        ml.service_username: settings.mlflow_service_password_path,
    }
    if auth.get_user(admin, name) is None:
        msg = f"MLflow has no user {name}"
        raise RegistryError(msg)
    auth.set_password(admin, name, new)
    if name in files:
        replace_secret(files[name], new)
        console.print(f"new password of {name} set in MLflow and stored in {files[name]}")
        return
    console.print(f"new password of {name} set in MLflow", highlight=False)
    if generated:
        typer.echo(new.get_secret_value())
