"""Static checks of docker-compose.yml, the Dockerfile and .dockerignore (no Docker needed).

The compose file is read the way ``docker compose`` reads it: YAML first (anchors
and ``<<`` merges included), then ``${VAR...}`` interpolation of every string
value with a sample ``.env``. Settings names and default ports come from
:mod:`pipeline.config`, never from a copy in this file.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import (
    ClickHouseSettings,
    EmbeddedSettings,
    KafkaSettings,
    MlflowSettings,
    Settings,
    is_loopback,
    load_settings,
    split_host_port,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "infra" / "compose" / "env.example"
PYPROJECT = ROOT / "pyproject.toml"

# The CLI's top-level commands (the brief's list; a service naming another fails).
PIPELINE_COMMANDS = frozenset(
    "up down status smoke topics migrate worker controller sql sim optimize policy demo".split()
)
EXPECTED_SERVICES = frozenset(
    {"kafka", "kafka-init", "clickhouse", "postgres", "mlflow", "migrate", "worker", "controller"}
)
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
    "MLFLOW_DB_PASSWORD": "sample-postgres-pw",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE_KEY", re.IGNORECASE)


# --- compose interpolation -------------------------------------------------

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
        present = name in env
        usable = bool(env.get(name)) if op and op.startswith(":") else present
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


# --- compose helpers -------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    resolved = interpolate_tree(raw, SAMPLE_ENV)
    assert isinstance(resolved, dict)
    return resolved


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class Published:
    host_ip: str  # "" means every interface
    host_port: int | None  # None means an ephemeral port
    container_port: int


def published_ports(service: Mapping[str, Any]) -> list[Published]:
    out: list[Published] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            host = entry.get("published")
            out.append(
                Published(
                    str(entry.get("host_ip", "")),
                    int(host) if host else None,
                    int(entry["target"]),
                )
            )
            continue
        spec = str(entry).split("/")[0]
        host_ip = ""
        if spec.startswith("["):
            host_ip, _, spec = spec[1:].partition("]:")
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, *parts = parts
        host_port = int(parts[0]) if len(parts) == 2 and parts[0] else None
        out.append(Published(host_ip, host_port, int(parts[-1])))
    return out


def volume_mounts(service: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """(named volume or None for anonymous/bind, container path) of each mount."""
    mounts: list[tuple[str | None, str]] = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, Mapping):
            source = entry.get("source") if entry.get("type", "volume") == "volume" else None
            mounts.append((source, entry["target"]))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            mounts.append((None, parts[0]))
        else:
            source = parts[0]
            named = None if source.startswith((".", "/", "~")) else source
            mounts.append((named, parts[1]))
    return mounts


def option(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def our_services(compose: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def pipeline_invocations(
    service: Mapping[str, Any], image_entrypoint: list[str]
) -> list[list[str]]:
    """The argv after `pipeline` of every pipeline run the service makes."""
    entrypoint = argv(service.get("entrypoint"))
    if "build" in service and "entrypoint" not in service:
        entrypoint = image_entrypoint
    commands = [entrypoint + argv(service.get("command"))]
    health = service.get("healthcheck", {}).get("test")
    if health:
        commands.append(argv(health))
    runs: list[list[str]] = []
    for command in commands:
        for i, token in enumerate(command):
            if PurePosixPath(token).name == "pipeline":
                runs.append(command[i + 1 :])
            elif " " in token:  # a shell string, e.g. sh -c "pipeline migrate && ..."
                runs.extend(
                    shlex.split(m.group(1))
                    for m in re.finditer(r"(?:^|[\s;&|/])pipeline((?:\s+[\w-]+)*)", token)
                )
    return runs


# --- settings ---------------------------------------------------------------


def settings_env_names(model: type[BaseModel], prefix: str, delimiter: str) -> set[str]:
    """Every environment variable that sets a leaf field of ``model``."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name).upper()
        candidates = (info.annotation, *get_args(info.annotation))
        nested = [t for t in candidates if inspect.isclass(t) and issubclass(t, BaseModel)]
        if nested:
            names |= settings_env_names(nested[0], key + delimiter, delimiter)
        else:
            names.add(key)
    return names


@pytest.fixture(scope="module")
def valid_env_names() -> set[str]:
    config = Settings.model_config
    prefix = str(config.get("env_prefix", "")).upper()
    delimiter = config.get("env_nested_delimiter")
    assert prefix == "PIPELINE_", "the settings prefix changed; compose needs updating"
    assert delimiter, "without a nested delimiter no section can be set from the environment"
    return settings_env_names(Settings, prefix, delimiter)


# --- Dockerfile ---------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuations joined, comments dropped, ARGs resolved."""
    lines: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continuation
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        keyword, _, rest = (buffer + stripped).partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in lines:
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = interpolate(rest, global_args).split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


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


def pip_install_args(run: str) -> list[list[str]]:
    """The arguments of each `pip install` in a RUN line."""
    tokens = shlex.split(run)
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in ("&&", ";", "||"):
            segments.append([])
        else:
            segments[-1].append(token)
    return [
        seg[seg.index("install") + 1 :]
        for seg in segments
        if "install" in seg and any(PurePosixPath(t).name.startswith("pip") for t in seg)
    ]


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "!"))]


def is_dockerignored(path: str, patterns: list[str]) -> bool:
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, pattern.strip("/").removeprefix("**/"))
        or fnmatch.fnmatchcase(prefix, pattern.strip("/"))
        for prefix in prefixes
        for pattern in patterns
    )


# --- tests: compose -------------------------------------------------------------


def test_compose_parses_and_has_the_expected_services(raw: dict[str, Any]) -> None:
    services = raw.get("services")
    assert isinstance(services, dict)
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"
    assert "x-pipeline-env" in raw, "the shared PIPELINE_* block (x-pipeline-env) is gone"


def test_settings_env_names_walk_nested_models(valid_env_names: set[str]) -> None:
    # Every leaf of every section, and no bare section names.
    for section in ("kafka", "clickhouse", "mlflow"):
        sub = Settings.model_fields[section].annotation
        assert inspect.isclass(sub) and issubclass(sub, BaseModel)
        expected = {f"PIPELINE_{section.upper()}__{leaf.upper()}" for leaf in sub.model_fields}
        assert expected <= valid_env_names
        assert f"PIPELINE_{section.upper()}" not in valid_env_names


def test_every_pipeline_variable_is_a_settings_field(
    raw: dict[str, Any], stages: list[Stage], valid_env_names: set[str]
) -> None:
    used: dict[str, str] = {}
    for name, service in raw["services"].items():
        for key in env_of(service):
            if key.upper().startswith("PIPELINE_"):
                used[key] = f"service {name}"
    for key in dockerfile_env(stages[-1]):
        if key.upper().startswith("PIPELINE_"):
            used[key] = "Dockerfile ENV"
    # Interpolation names too: with the prefix they also reach a sourced shell.
    for key in referenced_variables(raw):
        if key.upper().startswith("PIPELINE_"):
            used[key] = "a ${...} reference"
    assert used, "no PIPELINE_* variable found at all"
    unknown = {key: where for key, where in used.items() if key not in valid_env_names}
    assert not unknown, f"not fields of pipeline.config.Settings: {unknown}"


def test_pipeline_services_share_one_environment(compose: dict[str, Any]) -> None:
    envs = {
        name: {k: v for k, v in env_of(svc).items() if k.startswith("PIPELINE_")}
        for name, svc in compose["services"].items()
        if name in EXPECTED_INVOCATIONS
    }
    assert envs.keys() == EXPECTED_INVOCATIONS.keys()
    shared = dict(compose["x-pipeline-env"])
    own = {"PIPELINE_KAFKA__CLIENT_ID"}  # the one setting that names the service
    for name, env in envs.items():
        keys = (shared.keys() | env.keys()) - own
        differing = {k for k in keys if env.get(k) != shared.get(k)}
        assert not differing, f"{name} diverges from x-pipeline-env in {sorted(differing)}"


@pytest.mark.parametrize("service", sorted(EXPECTED_INVOCATIONS))
def test_pipeline_environment_loads_and_points_at_the_services(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(key)
    for key, value in env_of(compose["services"][service]).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()

    targets = {
        "kafka": settings.kafka.first_server,
        "clickhouse": settings.clickhouse.host_port,
        "mlflow": settings.mlflow.host_port,
    }
    services = compose["services"]
    for target, address in targets.items():
        assert address is not None, f"{target}: not an HTTP URL"
        host, port = address
        assert host == target, f"{service} reaches {target} at {host!r}, not the service name"
        assert port in container_ports(target, services[target]), f"{target} is not on {port}"
    assert (
        settings.clickhouse.password.get_secret_value()
        == SAMPLE_ENV["PIPELINE_CLICKHOUSE__PASSWORD"]
    )
    # The state lives where the service's volume is (a relative path would land
    # in the image's read-only /app).
    state_dir = env_of(services[service])["PIPELINE_STATE_DIR"]
    assert PurePosixPath(state_dir).is_absolute()
    mounts = {target for _, target in volume_mounts(services[service])}
    assert service in ONE_SHOTS or state_dir in mounts, f"{service}: {state_dir} is not a volume"


def container_ports(name: str, service: Mapping[str, Any]) -> set[int]:
    """Ports the service listens on inside the network."""
    ports = {p.container_port for p in published_ports(service)}
    if name == "kafka":
        listeners = env_of(service)["KAFKA_LISTENERS"]
        ports |= {split_host_port(urlsplit(x).netloc, 0)[1] for x in listeners.split(",")}
    if name == "mlflow":
        ports.add(int(option(argv(service.get("command")), "--port")))
    return ports


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        parts = urlsplit(item.strip())
        out[parts.scheme.upper()] = (parts.hostname or "", parts.port or 0)
    return out


def test_kafka_ports_match_the_settings_default(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = env_of(kafka)
    default_host, default_port = KafkaSettings().first_server
    listeners = kafka_listeners(env["KAFKA_LISTENERS"])
    advertised = kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    # In-network clients: kafka:<default port>, on a listener bound to that port.
    internal = [name for name, addr in advertised.items() if addr == ("kafka", default_port)]
    assert internal, f"no listener advertised as kafka:{default_port}: {advertised}"
    assert listeners[internal[0]][1] == default_port
    # Host clients: every published port is advertised as the host address it is
    # published on, and the default one is the settings default.
    published = published_ports(kafka)
    assert published, "Kafka publishes no host port"
    for port in published:
        bound = [name for name, (_, p) in listeners.items() if p == port.container_port]
        assert bound, f"no listener on container port {port.container_port}"
        assert advertised.get(bound[0]) == (port.host_ip, port.host_port), (
            f"{bound[0]} is published on {port.host_ip}:{port.host_port} "
            f"but advertised as {advertised.get(bound[0])}"
        )
    assert (default_host, default_port) in {(p.host_ip, p.host_port) for p in published}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller not in advertised, "the controller listener must not be advertised"
    assert listeners[controller][1] not in {p.container_port for p in published}


def test_clickhouse_port_matches_the_settings_default(compose: dict[str, Any]) -> None:
    clickhouse = compose["services"]["clickhouse"]
    default_host, default_port = ClickHouseSettings().host_port
    ports = {(p.host_ip, p.host_port, p.container_port) for p in published_ports(clickhouse)}
    assert (default_host, default_port, default_port) in ports
    health = " ".join(argv(clickhouse["healthcheck"]["test"]))
    ping = re.search(rf"https?://([^/:\s]+):{default_port}/ping\b", health)
    assert ping, f"healthcheck is not /ping: {health}"
    # On first boot the image's init server listens on loopback only; a loopback
    # ping would report healthy before the user and database exist.
    assert not is_loopback(ping.group(1)), f"healthcheck pings {ping.group(1)}"


def test_mlflow_port_matches_the_settings_default(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    default = MlflowSettings().host_port
    assert default is not None
    default_host, default_port = default
    assert int(option(argv(mlflow["command"]), "--port")) == default_port
    ports = {(p.host_ip, p.host_port, p.container_port) for p in published_ports(mlflow)}
    assert (default_host, default_port, default_port) in ports


def test_host_ports_bind_to_loopback_only(compose: dict[str, Any]) -> None:
    seen = 0
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        for port in published_ports(service):
            seen += 1
            assert port.host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            assert port.host_port is not None, f"{name} publishes an ephemeral port"
    assert seen >= 3, "expected Kafka, ClickHouse and MLflow on the host"


def image_reference(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    repository = name[: len(name) - len(tag) - 1] if tag else name
    return repository, tag, digest or None


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image (an unnamed build cannot be pinned or pushed)"
        _, tag, digest = image_reference(image)
        assert tag or digest, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} floats on latest"
        assert digest or re.search(r"\d", tag or ""), f"{name}: {image} names no version"


def test_kafka_image_matches_the_embedded_broker_version(compose: dict[str, Any]) -> None:
    repository, tag, _ = image_reference(compose["services"]["kafka"]["image"])
    assert repository == "apache/kafka"
    assert tag == EmbeddedSettings().kafka_version


def test_pipeline_commands_exist(compose: dict[str, Any], stages: list[Stage]) -> None:
    entrypoint = image_entrypoint(stages)
    runs: dict[str, list[list[str]]] = {}
    for name, service in compose["services"].items():
        for run in pipeline_invocations(service, entrypoint):
            assert run, f"{name} runs `pipeline` with no command"
            assert run[0] in PIPELINE_COMMANDS, f"{name} runs unknown `pipeline {run[0]}`"
            runs.setdefault(name, []).append(run)
    for name, expected in EXPECTED_INVOCATIONS.items():
        assert expected in runs.get(name, []), f"{name} must run `pipeline {' '.join(expected)}`"


def test_dependencies_wait_for_the_right_condition(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck for {name}"
            elif condition == "service_completed_successfully":
                assert dep in ONE_SHOTS, f"{name} waits for {dep} to exit, but it never does"
            else:
                pytest.fail(f"{name} starts before {dep} is ready ({condition})")
    for name in ("worker", "controller"):
        depends = services[name]["depends_on"]
        for one_shot in ONE_SHOTS:
            assert depends[one_shot]["condition"] == "service_completed_successfully"
    assert services["controller"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_restart_policies(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        restart = service.get("restart")
        if name in ONE_SHOTS:
            assert restart == "no", f"one-shot {name} must not restart (got {restart!r})"
        else:
            assert restart in ("always", "unless-stopped") or str(restart).startswith(
                "on-failure"
            ), f"{name} has no restart policy"


def test_secrets_are_required_variables_never_literals(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    # Every secret a service receives (a PASSWORD-like variable, or the password
    # inside a URL) must be one of the .env secrets, not a value in the file...
    secrets = set(SAMPLE_ENV.values())
    checked = 0
    for name, service in compose["services"].items():
        for key, value in env_of(service).items():
            found = [value] if SECRET_NAME.search(key) else []
            if "://" in value and urlsplit(value).password:
                found.append(urlsplit(value).password or "")
            for secret in found:
                checked += 1
                assert secret in secrets, f"{name}.{key} holds a secret written in the file"
    assert checked >= 4
    # ...and those are ${VAR:?...}: compose stops when one is unset or empty,
    # rather than starting with a default password.
    refs = referenced_variables(raw)
    for var in SAMPLE_ENV:
        assert refs.get(var) == {":?"}, f"{var} is referenced as {refs.get(var)}, not only :?"
        with pytest.raises(MissingVariableError, match=var):
            interpolate_tree(raw, {**SAMPLE_ENV, var: ""})


def test_servers_and_clients_share_their_credentials(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    shared = raw["x-pipeline-env"]
    clickhouse = env_of(raw["services"]["clickhouse"])
    assert clickhouse["CLICKHOUSE_USER"] == shared["PIPELINE_CLICKHOUSE__USERNAME"]
    assert clickhouse["CLICKHOUSE_PASSWORD"] == shared["PIPELINE_CLICKHOUSE__PASSWORD"]
    assert clickhouse["CLICKHOUSE_DB"] == shared["PIPELINE_CLICKHOUSE__DATABASE"]
    postgres = env_of(compose["services"]["postgres"])
    store = urlsplit(env_of(compose["services"]["mlflow"])["MLFLOW_BACKEND_STORE_URI"])
    assert store.scheme.startswith("postgresql")
    assert (store.hostname, store.port or 5432) == ("postgres", 5432)
    assert store.username == postgres["POSTGRES_USER"]
    assert store.password == postgres["POSTGRES_PASSWORD"] == SAMPLE_ENV["MLFLOW_DB_PASSWORD"]
    assert store.path.lstrip("/") == postgres["POSTGRES_DB"]


def test_env_example_covers_every_required_variable(raw: dict[str, Any]) -> None:
    listed: dict[str, bool] = {}  # name -> set (uncommented)
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=", line.strip())
        if m:
            listed[m.group(2)] = not m.group(1)
    refs = referenced_variables(raw)
    required = {name for name, ops in refs.items() if ops & {":?", "?"}}
    assert required, "no required variable: secrets would have defaults"
    assert {name for name in required if not listed.get(name)} == set()
    stale = listed.keys() - refs.keys()
    assert not stale, f"env.example lists variables compose never reads: {sorted(stale)}"


def test_volumes_are_declared_and_cover_the_data_dirs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    used = {vol for svc in services.values() for vol, _ in volume_mounts(svc) if vol}
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert declared <= used, f"unused volumes: {sorted(declared - used)}"
    mlflow_cmd = argv(services["mlflow"]["command"])
    data_dirs = {
        "kafka": env_of(services["kafka"])["KAFKA_LOG_DIRS"],
        "clickhouse": "/var/lib/clickhouse",
        "postgres": env_of(services["postgres"]).get("PGDATA", "/var/lib/postgresql/data"),
        "mlflow": option(mlflow_cmd, "--artifacts-destination"),
        "controller": env_of(services["controller"])["PIPELINE_STATE_DIR"],
    }
    for name, path in data_dirs.items():
        named = {target for vol, target in volume_mounts(services[name]) if vol}
        assert path in named, f"{name} keeps {path} outside a named volume"


def test_mlflow_serves_artifacts_to_the_pipeline_clients(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    command = argv(mlflow.get("entrypoint")) + argv(mlflow["command"])
    assert command[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in command
    assert option(command, "--host") == "0.0.0.0"  # noqa: S104  # inside its container
    # MLflow 3 answers only allowed Host headers; the clients send the one of their URI.
    allowed = option(command, "--allowed-hosts").split(",")
    uri = env_of(compose["services"]["controller"])["PIPELINE_MLFLOW__TRACKING_URI"]
    for host in (urlsplit(uri).netloc, urlsplit(MlflowSettings().tracking_uri).netloc):
        assert any(fnmatch.fnmatchcase(host, a) if "*" in a else host == a for a in allowed), (
            f"MLflow would reject Host {host!r}; allowed: {allowed}"
        )


# --- tests: Dockerfile and .dockerignore -------------------------------------------


def test_dockerfile_is_multistage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        assert stage.base in names or stage.base.startswith("python:3.11-slim"), stage.base
    copied_from = {
        m.group(1) for args in stages[-1].args_of("COPY") if (m := re.search(r"--from=(\S+)", args))
    }
    assert copied_from & names, "the runtime stage copies nothing from the build stage"


def test_dockerfile_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].args_of("USER")
    assert users, "the final stage never sets USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), f"the final USER is {users[-1]}"


def test_dockerfile_installs_the_server_extra_and_postgres_driver(stages: list[Stage]) -> None:
    installs = [
        args for stage in stages for run in stage.args_of("RUN") for args in pip_install_args(run)
    ]
    packages = [arg for args in installs for arg in args if not arg.startswith("-")]
    assert ".[server]" in packages, f"no `pip install '.[server]'` in {installs}"
    assert any(p.startswith("psycopg2-binary") for p in packages), "mlflow needs psycopg2"


def test_dockerfile_entrypoint_is_the_pipeline_script(stages: list[Stage]) -> None:
    assert image_entrypoint(stages) == ["pipeline"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert "pipeline" in scripts


def test_dockerfile_prepares_the_mounted_directories(
    compose: dict[str, Any], stages: list[Stage]
) -> None:
    # An empty volume takes the owner of the directory it covers; if the image
    # lacks it, the volume is root's and the non-root user cannot write.
    runs = " ".join(stages[-1].args_of("RUN"))
    for name, service in our_services(compose).items():
        for _, target in volume_mounts(service):
            assert re.search(rf"mkdir\b[^&;]*\s{re.escape(target)}(\s|$)", runs), (
                f"{name} mounts {target}, which the image never creates"
            )
            owned = [
                path
                for m in re.finditer(r"chown\s+(?:-R\s+)?\S+\s+([^&;]+)", runs)
                for path in m.group(1).split()
            ]
            assert any(target == p or target.startswith(p.rstrip("/") + "/") for p in owned), (
                f"{target} ({name}) is not owned by the service user"
            )


def test_dockerignore_keeps_local_state_out_but_not_the_sources(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".state", ".git", ".env", "pipeline/__pycache__", "x.egg-info"):
        assert is_dockerignored(path, patterns), f"{path} would enter the build context"
    sources = [
        src
        for stage in stages
        for args in stage.args_of("COPY")
        if "--from=" not in args
        for src in shlex.split(args)[:-1]
        if not src.startswith("--")
    ]
    assert sources, "the Dockerfile copies nothing from the context"
    excluded = [src for src in sources if is_dockerignored(src, patterns)]
    assert not excluded, f".dockerignore drops what the Dockerfile copies: {excluded}"
