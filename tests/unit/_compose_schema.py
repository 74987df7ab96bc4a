"""Readers for docker-compose.yml and the Dockerfile, shared by the tests/unit/test_compose*.py.

docker-compose.yml is read the way ``docker compose`` reads it: :func:`yaml.safe_load`
(anchors and ``<<`` merges included), then ``${VAR...}`` interpolation of every string
value with a sample ``.env``, then validation against :class:`Compose`. The models cover
only the part of the Compose specification this project uses and forbid unknown keys, so a
misspelt key fails here instead of being ignored until someone runs ``docker compose``.
Short syntaxes (``"127.0.0.1:8123:8123"``, ``name:/path``, a list ``depends_on``, a string
``command``) are normalised to one form by the models.

The Dockerfile has no parser we want to depend on; :func:`parse_dockerfile` splits it into
stages and instructions (continuations joined, comments dropped, global ARGs resolved).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "infra" / "compose" / "env.example"
PYPROJECT = ROOT / "pyproject.toml"

# What each of our services must run, as argv after `pipeline`.
EXPECTED_INVOCATIONS = {
    "kafka-init": ["topics", "create"],
    "migrate": ["migrate"],
    "worker": ["worker"],
    "controller": ["controller"],
}
ONE_SHOTS = frozenset({"kafka-init", "migrate"})
# The values a user puts into .env; never real secrets.
SAMPLE_ENV = {
    "PIPELINE_CLICKHOUSE__PASSWORD": "sample-clickhouse-pw",
    "CLICKHOUSE_ANALYST_PASSWORD": "sample-clickhouse-analyst-pw",
    "MLFLOW_DB_PASSWORD": "sample-postgres-pw",
    "MLFLOW_ADMIN_PASSWORD": "sample-mlflow-admin-pw",
    "PIPELINE_MLFLOW__PASSWORD": "sample-mlflow-service-pw",
    "MLFLOW_FLASK_SECRET_KEY": "sample-mlflow-csrf-key",
}

# --- interpolation -------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^{}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(Exception):
    """A ``${VAR:?message}`` reference with VAR unset (compose refuses to start)."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve ``$$``, ``$V``, ``${V}`` and the ``:-  -  :?  ?  :+  +`` forms, like compose."""

    def repl(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"] or ""
        usable = bool(env.get(name)) if op and op.startswith(":") else name in env
        if op in (":-", "-"):
            return env[name] if usable else interpolate(arg, env)
        if op in (":?", "?"):
            if not usable:
                msg = f"{name}: {arg}"
                raise MissingVariableError(msg)
            return env[name]
        if op in (":+", "+"):
            return interpolate(arg, env) if usable else ""
        return env.get(name, "")

    return _VAR.sub(repl, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys), as compose does after parsing YAML."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, Mapping):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    return node


def referenced_variables(node: Any) -> dict[str, set[str]]:
    """Every ``${VAR...}`` reference in string values: name -> operators used ('' for none)."""
    found: dict[str, set[str]] = {}
    if isinstance(node, str):
        for m in _VAR.finditer(node):
            if not m["escaped"]:
                found.setdefault(m["braced"] or m["named"], set()).add(m["op"] or "")
    elif isinstance(node, Mapping | list):
        for child in node.values() if isinstance(node, Mapping) else node:
            for name, ops in referenced_variables(child).items():
                found.setdefault(name, set()).update(ops)
    return found


# --- short syntaxes ------------------------------------------------------------------


def _scalar_str(value: Any) -> Any:
    """Numbers become strings as in compose; booleans stay (and fail): quote yes/no/on/off."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _environment(value: Any) -> Any:
    if isinstance(value, list):  # ["KEY=value", "KEY"]
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in value)
    if isinstance(value, Mapping):
        return {k: "" if v is None else _scalar_str(v) for k, v in value.items()}
    return value


def _argv(value: Any) -> Any:
    if isinstance(value, str):  # compose splits a string command like a shell, runs no shell
        return shlex.split(value)
    return [_scalar_str(v) for v in value] if isinstance(value, list) else value


def _port(value: Any) -> Any:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return value  # the long syntax
    spec, _, protocol = str(value).partition("/")
    host_ip = ""
    if spec.startswith("["):
        host_ip, _, spec = spec[1:].partition("]:")
    parts = spec.split(":")
    if len(parts) == 3:
        host_ip, *parts = parts
    if len(parts) > 2:
        msg = f"not a port mapping: {value!r}"
        raise ValueError(msg)
    published = int(parts[0]) if len(parts) == 2 and parts[0] else None
    out = {"host_ip": host_ip, "published": published, "target": int(parts[-1])}
    return out | ({"protocol": protocol} if protocol else {})


def _mount(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the long syntax
    source, target, *mode = value.split(":") if ":" in value else ("", value)
    if mode not in ([], ["ro"], ["rw"]):
        msg = f"unexpected mount mode in {value!r}"
        raise ValueError(msg)
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return {"type": kind, "source": source or None, "target": target, "read_only": mode == ["ro"]}


def _depends_on(value: Any) -> Any:
    return dict.fromkeys(value, {}) if isinstance(value, list) else value


def _build(value: Any) -> Any:
    return {"context": value} if isinstance(value, str) else value


def _healthcheck_test(value: Any) -> Any:
    return ["CMD-SHELL", value] if isinstance(value, str) else value


Argv = Annotated[list[str], BeforeValidator(_argv)]
Environment = Annotated[dict[str, str], BeforeValidator(_environment)]
Duration = Annotated[str, Field(pattern=r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Restart = Annotated[str, Field(pattern=r"^(no|always|unless-stopped|on-failure(:\d+)?)$")]
ENVIRONMENT = TypeAdapter(Environment)  # for the raw (not interpolated) blocks

# --- the schema ----------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Build(_Model):
    context: str = "."
    dockerfile: str = "Dockerfile"
    target: str | None = None
    args: Environment = {}


class Logging(_Model):
    driver: str
    options: dict[str, str] = {}


class Ulimit(_Model):
    soft: int
    hard: int


class PublishedPort(_Model):
    target: Port
    published: Annotated[Port | None, Field(strict=False)] = None  # None: an ephemeral port
    host_ip: str = ""  # "": every interface
    protocol: Literal["tcp", "udp"] = "tcp"


class Mount(_Model):
    type: Literal["volume", "bind", "tmpfs"] = "volume"
    source: str | None = None  # a volume name, a host path, or None (anonymous)
    target: str = Field(pattern=r"^/")
    read_only: bool = False

    @property
    def volume(self) -> str | None:
        """The named volume mounted here, None for an anonymous volume or a bind mount."""
        return self.source if self.type == "volume" else None


class Healthcheck(_Model):
    test: Annotated[list[str], BeforeValidator(_healthcheck_test), Field(min_length=1)]
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=1)
    start_period: Duration | None = None
    start_interval: Duration | None = None
    disable: bool = False

    @model_validator(mode="after")
    def _known_form(self) -> Healthcheck:
        if self.test[0] not in ("NONE", "CMD", "CMD-SHELL"):
            msg = f"a healthcheck test starts with NONE, CMD or CMD-SHELL, not {self.test[0]!r}"
            raise ValueError(msg)
        return self


class Dependency(_Model):
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = (
        "service_started"
    )
    restart: bool = False
    required: bool = True


class Service(_Model):
    image: str | None = None
    build: Annotated[Build | None, BeforeValidator(_build)] = None
    hostname: str | None = None
    container_name: str | None = None
    entrypoint: Argv | None = None  # None: the image's ENTRYPOINT
    command: Argv | None = None
    environment: Environment = {}
    ports: list[Annotated[PublishedPort, BeforeValidator(_port)]] = []
    volumes: list[Annotated[Mount, BeforeValidator(_mount)]] = []
    healthcheck: Healthcheck | None = None
    depends_on: Annotated[dict[str, Dependency], BeforeValidator(_depends_on)] = {}
    restart: Restart | None = None  # a bare `no` is YAML for False: it fails, quote it
    init: bool = False
    security_opt: list[str] = []
    logging: Logging | None = None
    ulimits: dict[str, int | Ulimit] = {}
    stop_grace_period: Duration | None = None
    network_mode: str | None = None

    @model_validator(mode="after")
    def _runs_something(self) -> Service:
        if self.image is None and self.build is None:
            msg = "a service needs an image or a build"
            raise ValueError(msg)
        return self


class Volume(_Model):
    driver: str | None = None
    external: bool = False
    name: str | None = None


class Compose(_Model):
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    services: dict[str, Service] = Field(min_length=1)
    volumes: dict[str, Volume | None] = {}
    # The one PIPELINE_* block all our services merge (the `<<: *pipeline-env` anchor).
    x_pipeline_env: Environment = Field(alias="x-pipeline-env", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _drop_other_extensions(cls, data: Any) -> Any:
        # x-* keys are YAML anchors for reuse; what they hold is validated where merged.
        if isinstance(data, Mapping):
            keep = {"x-pipeline-env"}
            return {k: v for k, v in data.items() if not k.startswith("x-") or k in keep}
        return data


def load_raw(path: Path = COMPOSE) -> dict[str, Any]:
    """The YAML document, anchors merged, before interpolation."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} must be a mapping"
    return data


def load_compose(raw: Mapping[str, Any], env: Mapping[str, str] = SAMPLE_ENV) -> Compose:
    """The interpolated document, validated (raises ValidationError or MissingVariableError)."""
    return Compose.model_validate(interpolate_tree(raw, env))


DELETE = object()  # the value of :func:`edited` that removes the key


def edited(raw: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``value`` at the dotted ``path`` (``+`` appends to a list).

    The copy goes through JSON, so it does not share the objects that YAML anchors share
    and the edit lands in one place only.
    """
    copy = json.loads(json.dumps(raw))
    *parents, last = path.split(".")
    node = copy
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    elif last == "+":
        node.append(value)
    else:
        node[int(last) if isinstance(node, list) else last] = value
    assert isinstance(copy, dict)
    return copy


# --- Dockerfile ----------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_lines(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuations joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continuation
        if stripped.endswith("\\"):
            buffer += stripped[:-1].rstrip() + " "
            continue
        keyword, _, rest = (buffer + stripped).partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"
    return lines


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; global ARGs resolved in FROM."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in dockerfile_lines(text):
        if keyword == "ARG" and not stages:
            arg, _, default = rest.partition("=")
            global_args[arg] = default
        elif keyword == "FROM":
            words = [w for w in interpolate(rest, global_args).split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def dockerfile_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.args_of("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def image_entrypoint(stages: list[Stage]) -> list[str]:
    entrypoints = stages[-1].args_of("ENTRYPOINT")
    assert entrypoints, "the final stage has no ENTRYPOINT"
    value = json.loads(entrypoints[-1])  # exec form, so signals reach the process
    assert isinstance(value, list)
    return [str(v) for v in value]
