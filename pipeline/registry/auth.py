"""MLflow's basic-auth REST API, with the caller's own credentials.

The MLflow server runs its basic-auth app (``mlflow server --app-name
basic-auth``): every request names a user and its password; a user holds
READ on everything by default (``default_permission``), MANAGE on what it
created, and whatever an admin granted it. These helpers speak to the
server's user and permission endpoints with explicit credentials, so one
process can act as the admin for one call without changing the login of its
``MlflowClient`` (which MLflow reads from ``MLFLOW_TRACKING_USERNAME``).

Passwords never appear in messages: only user names, URLs and HTTP statuses do.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from pipeline.errors import RegistryError

REVIEWER_PERMISSIONS = frozenset({"EDIT", "MANAGE"})
"""A user holding one of these on a policy's registered model may approve its versions."""

Method = Literal["GET", "POST", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Login:
    """A user name and its password for one MLflow server."""

    tracking_uri: str
    username: str
    password: SecretStr

    def __repr__(self) -> str:  # the dataclass repr would hold the SecretStr only, but be sure
        return f"Login({self.tracking_uri!r}, {self.username!r})"


class AuthRefused(RegistryError):  # noqa: N818  # reads as what happened: MLflow refused
    """MLflow answered 401 (unknown user or wrong password) or 403 (not permitted)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def request(
    login: Login,
    method: Method,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    timeout_s: float = 20.0,
) -> dict[str, Any]:
    """One REST call as ``login``; the JSON object answered (empty for no body).

    Raises:
        AuthRefused: 401 or 403.
        RegistryError: MLflow unreachable, or any other error status (named with it).
    """
    url = f"{login.tracking_uri.rstrip('/')}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    token = base64.b64encode(
        f"{login.username}:{login.password.get_secret_value()}".encode()
    ).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310  # URL from settings
    req.add_header("Authorization", f"Basic {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    what = f"{method} {path} as {login.username!r} at {login.tracking_uri}"
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as reply:  # noqa: S310  # http(s) URL
            raw = reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code == 401:
            msg = f"MLflow refused the login of {login.username!r} (wrong name or password): {what}"
            raise AuthRefused(msg, 401) from None
        if exc.code == 403:
            msg = f"MLflow refused {what}: permission denied"
            raise AuthRefused(msg, 403) from None
        msg = f"MLflow answered {exc.code} to {what}: {detail}"
        raise RegistryError(msg) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = f"MLflow at {login.tracking_uri} is not reachable ({reason}): is it running?"
        raise RegistryError(msg) from None
    if not raw:
        return {}
    found = json.loads(raw)
    return found if isinstance(found, dict) else {}


def current_user(login: Login) -> str:
    """The user MLflow authenticated ``login`` as (the server's word, not the caller's).

    Raises:
        AuthRefused: the name or password is wrong (401).
        RegistryError: MLflow is unreachable or answered otherwise.
    """
    found = request(login, "GET", "/api/2.0/mlflow/users/current")
    name = found.get("user", {}).get("username")
    if not isinstance(name, str) or not name:
        msg = f"MLflow at {login.tracking_uri} did not say who {login.username!r} is"
        raise RegistryError(msg)
    return name


def get_user(admin: Login, username: str) -> dict[str, Any] | None:
    """The user ``username`` (``username``, ``is_admin``, ...), or None when there is none."""
    try:
        found = request(admin, "GET", "/api/2.0/mlflow/users/get", params={"username": username})
    except AuthRefused:
        raise
    except RegistryError as exc:
        if "answered 404" in str(exc):
            return None
        raise
    user = found.get("user")
    return user if isinstance(user, dict) else None


def create_user(admin: Login, username: str, password: SecretStr) -> None:
    """Create the user ``username`` (admin only)."""
    request(
        admin,
        "POST",
        "/api/2.0/mlflow/users/create",
        body={"username": username, "password": password.get_secret_value()},
    )


def set_password(admin: Login, username: str, password: SecretStr) -> None:
    """Replace the password of ``username`` (an admin's call; for the admin's own, too)."""
    body = {"username": username, "password": password.get_secret_value()}
    if username == admin.username:  # MLflow asks anyone changing their own for the current one
        body["current_password"] = admin.password.get_secret_value()
    request(admin, "PATCH", "/api/2.0/mlflow/users/update-password", body=body)


def grant(admin: Login, username: str, resource_type: str, resource_id: str, level: str) -> None:
    """Grant ``level`` (READ, USE, EDIT, MANAGE) on one resource to ``username``.

    Idempotent: an existing grant on the resource is replaced by this one.
    """
    body = {
        "username": username,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "permission": level,
    }
    path = "/api/3.0/mlflow/users/permissions/grant"
    try:
        request(admin, "POST", path, body=body)
    except AuthRefused:
        raise
    except RegistryError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
        revoke(admin, username, resource_type, resource_id)
        request(admin, "POST", path, body=body)


def revoke(admin: Login, username: str, resource_type: str, resource_id: str) -> None:
    """Remove the grant of ``username`` on one resource (back to the default, READ)."""
    request(
        admin,
        "POST",
        "/api/3.0/mlflow/users/permissions/revoke",
        body={"username": username, "resource_type": resource_type, "resource_id": resource_id},
    )


def permission(admin: Login, username: str, resource_type: str, resource_id: str) -> str | None:
    """The effective permission of ``username`` on a resource, or None when no such user.

    Resolved by the server the way it authorizes a real request; an admin
    holds every permission (MLflow skips its checks for admins): MANAGE.
    """
    user = get_user(admin, username)
    if user is None:
        return None
    if user.get("is_admin"):
        return "MANAGE"
    found = request(
        admin,
        "GET",
        "/api/3.0/mlflow/users/permissions/get",
        params={"username": username, "resource_type": resource_type, "resource_id": resource_id},
    )
    level = found.get("permission")
    return str(level) if level else None
