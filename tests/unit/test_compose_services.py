"""Static checks of docker-compose.yml: addresses, ports, images, dependencies and volumes.

The file is loaded and validated as in test_compose.py (see :mod:`tests.unit._compose_schema`);
default ports and versions come from :mod:`pipeline.config`, never from a copy in this file.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from pipeline.config import Settings, is_loopback, load_settings
from tests.unit._compose_schema import (
    DELETE,
    EXPECTED_INVOCATIONS,
    ONE_SHOTS,
    SAMPLE_ENV,
    Compose,
    Service,
    edited,
    load_compose,
    load_raw,
)

# The defaults of every setting, not read from the environment.
DEFAULTS = Settings.model_construct()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_raw()


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> Compose:
    return load_compose(raw)


def option(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def container_ports(name: str, service: Service) -> set[int]:
    """Ports the service listens on inside the network."""
    ports = {p.target for p in service.ports}
    if name == "kafka":
        ports |= {
            port for _, port in kafka_listeners(service.environment["KAFKA_LISTENERS"]).values()
        }
    if name == "mlflow":
        ports.add(int(option(service.command or [], "--port")))
    return ports


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        parts = urlsplit(item.strip())
        out[parts.scheme.upper()] = (parts.hostname or "", parts.port or 0)
    return out


# --- addresses and ports -------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(EXPECTED_INVOCATIONS))
def test_pipeline_environment_loads_and_points_at_the_services(
    compose: Compose, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(key)
    services = compose.services
    for key, value in services[service].environment.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()

    targets = {
        "kafka": settings.kafka.first_server,
        "clickhouse": settings.clickhouse.host_port,
        "mlflow": settings.mlflow.host_port,
    }
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
    state_dir = services[service].environment["PIPELINE_STATE_DIR"]
    assert PurePosixPath(state_dir).is_absolute()
    mounts = {mount.target for mount in services[service].volumes}
    assert service in ONE_SHOTS or state_dir in mounts, f"{service}: {state_dir} is not a volume"


def test_kafka_ports_match_the_settings_default(compose: Compose) -> None:
    kafka = compose.services["kafka"]
    env = kafka.environment
    default_host, default_port = DEFAULTS.kafka.first_server
    listeners = kafka_listeners(env["KAFKA_LISTENERS"])
    advertised = kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    # In-network clients: kafka:<default port>, on a listener bound to that port.
    internal = [name for name, addr in advertised.items() if addr == ("kafka", default_port)]
    assert internal, f"no listener advertised as kafka:{default_port}: {advertised}"
    assert listeners[internal[0]][1] == default_port
    # Host clients: every published port is advertised as the host address it is
    # published on, and the default one is the settings default.
    assert kafka.ports, "Kafka publishes no host port"
    for port in kafka.ports:
        bound = [name for name, (_, p) in listeners.items() if p == port.target]
        assert bound, f"no listener on container port {port.target}"
        assert advertised.get(bound[0]) == (port.host_ip, port.published), (
            f"{bound[0]} is published on {port.host_ip}:{port.published} "
            f"but advertised as {advertised.get(bound[0])}"
        )
    assert (default_host, default_port) in {(p.host_ip, p.published) for p in kafka.ports}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller not in advertised, "the controller listener must not be advertised"
    assert listeners[controller][1] not in {p.target for p in kafka.ports}


def test_clickhouse_port_matches_the_settings_default(compose: Compose) -> None:
    clickhouse = compose.services["clickhouse"]
    default_host, default_port = DEFAULTS.clickhouse.host_port
    ports = {(p.host_ip, p.published, p.target) for p in clickhouse.ports}
    assert (default_host, default_port, default_port) in ports
    assert clickhouse.healthcheck is not None
    health = " ".join(clickhouse.healthcheck.test)
    ping = re.search(rf"https?://([^/:\s]+):{default_port}/ping\b", health)
    assert ping, f"healthcheck is not /ping: {health}"
    # On first boot the image's init server listens on loopback only; a loopback
    # ping would report healthy before the user and database exist.
    assert not is_loopback(ping.group(1)), f"healthcheck pings {ping.group(1)}"


def test_mlflow_port_matches_the_settings_default(compose: Compose) -> None:
    mlflow = compose.services["mlflow"]
    default = DEFAULTS.mlflow.host_port
    assert default is not None
    default_host, default_port = default
    assert int(option(mlflow.command or [], "--port")) == default_port
    ports = {(p.host_ip, p.published, p.target) for p in mlflow.ports}
    assert (default_host, default_port, default_port) in ports


def check_loopback_ports(compose: Compose) -> None:
    seen = 0
    for name, service in compose.services.items():
        assert service.network_mode != "host", f"{name} uses the host network"
        for port in service.ports:
            seen += 1
            assert port.host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            assert port.published is not None, f"{name} publishes an ephemeral port"
    assert seen >= 3, "expected Kafka, ClickHouse and MLflow on the host"


def test_host_ports_bind_to_loopback_only(compose: Compose) -> None:
    check_loopback_ports(compose)


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("services.kafka.ports.0", "0.0.0.0:9092:19092", "beyond loopback"),
        ("services.clickhouse.ports.0", "8123:8123", "beyond loopback"),  # every interface
        ("services.mlflow.ports.0", "127.0.0.1::5000", "ephemeral"),
        ("services.postgres.ports", ["127.0.0.1:5432:5432", "[::]:5432:5432"], "beyond loopback"),
        ("services.worker.network_mode", "host", "host network"),
    ],
)
def test_a_port_beyond_loopback_is_refused(
    raw: dict[str, Any], path: str, value: Any, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_loopback_ports(load_compose(edited(raw, path, value)))


# --- images -------------------------------------------------------------


def image_reference(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    repository = name[: len(name) - len(tag) - 1] if tag else name
    return repository, tag, digest or None


def check_images_pinned(compose: Compose) -> None:
    for name, service in compose.services.items():
        image = service.image
        assert image, f"{name} has no image (an unnamed build cannot be pinned or pushed)"
        _, tag, digest = image_reference(image)
        assert tag or digest, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} floats on latest"
        assert digest or re.search(r"\d", tag or ""), f"{name}: {image} names no version"


def test_images_are_pinned(compose: Compose) -> None:
    check_images_pinned(compose)


@pytest.mark.parametrize(
    ("image", "complaint"),
    [
        ("postgres", "no tag"),
        ("localhost:5000/postgres", "no tag"),
        ("postgres:latest", "latest"),
        ("postgres:bookworm", "no version"),
        (None, "no image"),
    ],
)
def test_an_unpinned_image_is_refused(
    raw: dict[str, Any], image: str | None, complaint: str
) -> None:
    bad = edited(raw, "services.migrate.image", image)
    with pytest.raises(AssertionError, match=complaint):
        check_images_pinned(load_compose(bad))


def test_kafka_image_matches_the_embedded_broker_version(compose: Compose) -> None:
    repository, tag, _ = image_reference(compose.services["kafka"].image or "")
    assert repository == "apache/kafka"
    assert tag == DEFAULTS.embedded.kafka_version


# --- dependencies, restarts, volumes -------------------------------------------------


def check_dependencies(compose: Compose) -> None:
    services = compose.services
    for name, service in services.items():
        for dep, spec in service.depends_on.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec.condition != "service_started", f"{name} starts before {dep} is ready"
            if spec.condition == "service_healthy":
                health = services[dep].healthcheck
                assert health and not health.disable, f"{dep} has no healthcheck for {name}"
            else:  # service_completed_successfully
                assert dep in ONE_SHOTS, f"{name} waits for {dep} to exit, but it never does"
    waits = {
        (name, one_shot, "service_completed_successfully")
        for name in ("worker", "controller")
        for one_shot in ONE_SHOTS
    }
    waits.add(("controller", "mlflow", "service_healthy"))
    for name, dep, condition in sorted(waits):
        wait = services[name].depends_on.get(dep)
        assert wait and wait.condition == condition, f"{name} must wait for {dep}: {condition}"


def test_dependencies_wait_for_the_right_condition(compose: Compose) -> None:
    check_dependencies(compose)


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("services.worker.depends_on.kafka.condition", "service_started", "before kafka is"),
        ("services.migrate.depends_on", ["clickhouse"], "before clickhouse is"),
        ("services.worker.depends_on.clickhous", {"condition": "service_healthy"}, "unknown"),
        ("services.clickhouse.healthcheck", None, "no healthcheck"),
        ("services.worker.depends_on.kafka.condition", "service_completed_successfully", "exit"),
        ("services.worker.depends_on.migrate", DELETE, "worker must wait for migrate"),
        ("services.controller.depends_on.mlflow", DELETE, "controller must wait for mlflow"),
    ],
)
def test_a_dependency_that_does_not_wait_is_refused(
    raw: dict[str, Any], path: str, value: Any, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_dependencies(load_compose(edited(raw, path, value)))


def test_restart_policies(compose: Compose) -> None:
    for name, service in compose.services.items():
        restart = service.restart
        if name in ONE_SHOTS:
            assert restart == "no", f"one-shot {name} must not restart (got {restart!r})"
        else:
            assert restart in ("always", "unless-stopped") or str(restart).startswith(
                "on-failure"
            ), f"{name} has no restart policy"


def check_volumes(compose: Compose) -> None:
    services = compose.services
    declared = set(compose.volumes)
    used = {m.volume for svc in services.values() for m in svc.volumes if m.volume}
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert declared <= used, f"unused volumes: {sorted(declared - used)}"
    data_dirs = {
        "kafka": services["kafka"].environment["KAFKA_LOG_DIRS"],
        "clickhouse": "/var/lib/clickhouse",
        "postgres": services["postgres"].environment.get("PGDATA", "/var/lib/postgresql/data"),
        "mlflow": option(services["mlflow"].command or [], "--artifacts-destination"),
        "controller": services["controller"].environment["PIPELINE_STATE_DIR"],
    }
    for name, path in data_dirs.items():
        named = {m.target for m in services[name].volumes if m.volume}
        assert path in named, f"{name} keeps {path} outside a named volume"


def test_volumes_are_declared_and_cover_the_data_dirs(compose: Compose) -> None:
    check_volumes(compose)


@pytest.mark.parametrize(
    ("edits", "complaint"),
    [
        ({"services.kafka.volumes.0": "kafka-dat:/var/lib/kafka/data"}, "undeclared"),
        ({"volumes.spare-data": None}, "unused"),
        (
            {
                "services.controller.volumes.0": "/var/lib/pipeline",
                "volumes.controller-state": DELETE,
            },
            "controller keeps /var/lib/pipeline outside a named volume",
        ),
        (
            {
                "services.postgres.volumes.0": "./pgdata:/var/lib/postgresql/data",
                "volumes.postgres-data": DELETE,
            },
            "postgres keeps /var/lib/postgresql/data outside a named volume",
        ),
        ({"services.kafka.environment.KAFKA_LOG_DIRS": "/kafka"}, "kafka keeps /kafka outside"),
    ],
)
def test_a_data_dir_outside_a_declared_volume_is_refused(
    raw: dict[str, Any], edits: dict[str, Any], complaint: str
) -> None:
    for path, value in edits.items():
        raw = edited(raw, path, value)
    with pytest.raises(AssertionError, match=complaint):
        check_volumes(load_compose(raw))


def test_mlflow_serves_artifacts_to_the_pipeline_clients(compose: Compose) -> None:
    mlflow = compose.services["mlflow"]
    command = (mlflow.entrypoint or []) + (mlflow.command or [])
    assert command[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in command
    assert option(command, "--host") == "0.0.0.0"  # noqa: S104  # inside its container
    # MLflow 3 answers only allowed Host headers; the clients send the one of their URI.
    allowed = option(command, "--allowed-hosts").split(",")
    uri = compose.services["controller"].environment["PIPELINE_MLFLOW__TRACKING_URI"]
    for host in (urlsplit(uri).netloc, urlsplit(DEFAULTS.mlflow.tracking_uri).netloc):
        assert any(fnmatch.fnmatchcase(host, a) if "*" in a else host == a for a in allowed), (
            f"MLflow would reject Host {host!r}; allowed: {allowed}"
        )
