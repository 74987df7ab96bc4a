"""Static checks of docker-compose.yml: its schema, the PIPELINE_* environment and secrets.

No Docker needed. The file is loaded with PyYAML and validated against the pydantic models
of :mod:`tests.unit._compose_schema` after ``${VAR...}`` interpolation with a sample
``.env``. Settings names come from :mod:`pipeline.config`, never from a copy in this file.
Ports, images, commands, dependencies and volumes: test_compose_services.py; the
Dockerfile and .dockerignore: test_compose_dockerfile.py.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.config import Settings
from tests.unit._compose_schema import (
    DELETE,
    DOCKERFILE,
    ENV_EXAMPLE,
    ENVIRONMENT,
    EXPECTED_INVOCATIONS,
    SAMPLE_ENV,
    Compose,
    MissingVariableError,
    Stage,
    dockerfile_env,
    edited,
    interpolate_tree,
    load_compose,
    load_raw,
    parse_dockerfile,
    referenced_variables,
)

EXPECTED_SERVICES = frozenset(
    {"kafka", "kafka-init", "clickhouse", "postgres", "mlflow", "migrate", "worker", "controller"}
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_raw()


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> Compose:
    return load_compose(raw)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


# --- schema ---------------------------------------------------------------------------


def test_compose_parses_and_has_the_expected_services(
    raw: dict[str, Any], compose: Compose
) -> None:
    assert isinstance(raw.get("services"), dict)
    missing = EXPECTED_SERVICES - compose.services.keys()
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"
    assert "x-pipeline-env" in raw, "the shared PIPELINE_* block (x-pipeline-env) is gone"
    assert compose.x_pipeline_env, "x-pipeline-env is empty"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("servics", {}),
        ("services.worker.enviroment", {}),
        ("services.worker.build.taget", "runtime"),
        ("services.kafka.healthcheck.intervall", "5s"),
        ("services.worker.depends_on.kafka.conditon", "service_healthy"),
        ("services.kafka.ports.+", {"target": 9093, "publised": 9093}),
        ("services.kafka.volumes.+", {"target": "/data", "src": "kafka-data"}),
        ("services.kafka.logging.option", {}),
        ("volumes.kafka-data", {"drivr": "local"}),
    ],
)
def test_the_schema_refuses_a_misspelt_key(raw: dict[str, Any], path: str, value: Any) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_compose(edited(raw, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("services.migrate.restart", False),  # a bare `no` in YAML
        ("services.worker.restart", "sometimes"),
        ("services.worker.depends_on.kafka.condition", "service_ready"),
        ("services.kafka.healthcheck.test", ["SHELL", "true"]),
        ("services.kafka.healthcheck.interval", "10"),
        ("services.kafka.healthcheck.retries", 0),
        ("services.kafka.ports.+", "127.0.0.1:x:19092"),
        ("services.kafka.ports.+", "127.0.0.1:70000:19092"),
        ("services.kafka.volumes.+", "kafka-data:data"),
        ("x-pipeline-env.PIPELINE_KAFKA__TOPIC_PREFIX", True),  # a bare `yes`
        ("services.postgres.image", DELETE),
        ("x-pipeline-env", DELETE),
    ],
)
def test_the_schema_refuses_wrong_values(raw: dict[str, Any], path: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        load_compose(edited(raw, path, value))
    # Refused where the edit is (the field, or the model that holds it), not elsewhere.
    edit = path.removesuffix(".+")
    where = [".".join(map(str, error["loc"])) for error in caught.value.errors()]
    assert any(loc.startswith(edit) or edit.startswith(loc + ".") for loc in where), where


def test_the_schema_reads_short_and_long_syntax_alike(raw: dict[str, Any]) -> None:
    port = {"host_ip": "127.0.0.1", "published": "9092", "target": 19092}
    volume = {"type": "volume", "source": "kafka-data", "target": "/var/lib/kafka/data"}
    long_raw = edited(raw, "services.kafka.ports", [port])
    long_raw = edited(long_raw, "services.kafka.volumes", [volume])
    long_raw = edited(long_raw, "services.worker.command", "worker")
    long_raw = edited(long_raw, "services.migrate.depends_on", ["clickhouse"])
    short, long = load_compose(raw).services, load_compose(long_raw).services
    assert short["kafka"].ports == long["kafka"].ports
    assert short["kafka"].volumes == long["kafka"].volumes
    assert short["worker"].command == long["worker"].command == ["worker"]
    assert long["migrate"].depends_on["clickhouse"].condition == "service_started"


# --- PIPELINE_* variables -------------------------------------------------------------


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


def test_settings_env_names_walk_nested_models(valid_env_names: set[str]) -> None:
    # Every leaf of every section, and no bare section names.
    for section in ("kafka", "clickhouse", "mlflow"):
        sub = Settings.model_fields[section].annotation
        assert inspect.isclass(sub) and issubclass(sub, BaseModel)
        expected = {f"PIPELINE_{section.upper()}__{leaf.upper()}" for leaf in sub.model_fields}
        assert expected <= valid_env_names
        assert f"PIPELINE_{section.upper()}" not in valid_env_names


def check_pipeline_variables(
    raw: dict[str, Any], compose: Compose, stages: list[Stage], valid: set[str]
) -> None:
    used: dict[str, str] = {}
    for name, service in compose.services.items():
        for key in service.environment:
            if key.upper().startswith("PIPELINE_"):
                used[key] = f"service {name}"
    for key in compose.x_pipeline_env:
        used[key] = "x-pipeline-env"
    for key in dockerfile_env(stages[-1]):
        if key.upper().startswith("PIPELINE_"):
            used[key] = "Dockerfile ENV"
    # Interpolation names too: with the prefix they also reach a sourced shell.
    for key in referenced_variables(raw):
        if key.upper().startswith("PIPELINE_"):
            used[key] = "a ${...} reference"
    assert used, "no PIPELINE_* variable found at all"
    unknown = {key: where for key, where in used.items() if key not in valid}
    assert not unknown, f"not fields of pipeline.config.Settings: {unknown}"


def test_every_pipeline_variable_is_a_settings_field(
    raw: dict[str, Any], compose: Compose, stages: list[Stage], valid_env_names: set[str]
) -> None:
    check_pipeline_variables(raw, compose, stages, valid_env_names)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("services.worker.environment.PIPELINE_KAFKA__BOOTSTRAP_SERVER", "kafka:9092"),
        ("x-pipeline-env.PIPELINE_CLICKHOUSE_URL", "http://clickhouse:8123"),
        ("services.kafka.image", "apache/kafka:${PIPELINE_KAFKA_VERSION:-4.1.1}"),
    ],
)
def test_a_misspelt_pipeline_variable_is_refused(
    raw: dict[str, Any], stages: list[Stage], valid_env_names: set[str], path: str, value: str
) -> None:
    bad = edited(raw, path, value)
    with pytest.raises(AssertionError, match="not fields of pipeline.config.Settings"):
        check_pipeline_variables(bad, load_compose(bad), stages, valid_env_names)


def check_one_environment(compose: Compose) -> None:
    envs = {
        name: {k: v for k, v in svc.environment.items() if k.startswith("PIPELINE_")}
        for name, svc in compose.services.items()
        if name in EXPECTED_INVOCATIONS
    }
    assert envs.keys() == EXPECTED_INVOCATIONS.keys()
    shared = compose.x_pipeline_env
    own = {"PIPELINE_KAFKA__CLIENT_ID"}  # the one setting that names the service
    for name, env in envs.items():
        # The MLflow admin password reaches the controller only (least privilege).
        mine = own | ({"PIPELINE_MLFLOW__ADMIN_PASSWORD"} if name == "controller" else set())
        assert "PIPELINE_MLFLOW__ADMIN_PASSWORD" not in shared
        keys = (shared.keys() | env.keys()) - mine
        differing = {k for k in keys if env.get(k) != shared.get(k)}
        assert not differing, f"{name} diverges from x-pipeline-env in {sorted(differing)}"


def test_pipeline_services_share_one_environment(compose: Compose) -> None:
    check_one_environment(compose)


def test_a_service_overriding_the_shared_environment_is_refused(raw: dict[str, Any]) -> None:
    bad = edited(raw, "services.worker.environment.PIPELINE_CLICKHOUSE__URL", "http://ch:8123")
    with pytest.raises(AssertionError, match="worker diverges"):
        check_one_environment(load_compose(bad))


# --- secrets ----------------------------------------------------------------------------


def check_secrets(raw: dict[str, Any], compose: Compose) -> None:
    # Every secret a service receives (a PASSWORD-like variable, or the password
    # inside a URL) must be one of the .env secrets, not a value in the file...
    secrets = set(SAMPLE_ENV.values())
    checked = 0
    for name, service in compose.services.items():
        for key, value in service.environment.items():
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


def test_secrets_are_required_variables_never_literals(
    raw: dict[str, Any], compose: Compose
) -> None:
    check_secrets(raw, compose)


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("services.postgres.environment.POSTGRES_PASSWORD", "hunter2", "written in the file"),
        (
            "services.mlflow.environment.MLFLOW_BACKEND_STORE_URI",
            "postgresql://mlflow:hunter2@postgres:5432/mlflow",
            "written in the file",
        ),
        (
            "services.postgres.environment.POSTGRES_PASSWORD",
            "${MLFLOW_DB_PASSWORD:-changeme}",
            "not only :?",
        ),
    ],
)
def test_a_literal_or_defaulted_secret_is_refused(
    raw: dict[str, Any], path: str, value: str, complaint: str
) -> None:
    bad = edited(raw, path, value)
    with pytest.raises(AssertionError, match=complaint):
        check_secrets(bad, load_compose(bad))


def test_servers_and_clients_share_their_credentials(raw: dict[str, Any], compose: Compose) -> None:
    # Compared before interpolation: the same ${...} expression, default included.
    shared = ENVIRONMENT.validate_python(raw["x-pipeline-env"])
    clickhouse = ENVIRONMENT.validate_python(raw["services"]["clickhouse"]["environment"])
    assert clickhouse["CLICKHOUSE_USER"] == shared["PIPELINE_CLICKHOUSE__USERNAME"]
    assert clickhouse["CLICKHOUSE_PASSWORD"] == shared["PIPELINE_CLICKHOUSE__PASSWORD"]
    assert clickhouse["CLICKHOUSE_DB"] == shared["PIPELINE_CLICKHOUSE__DATABASE"]
    postgres = compose.services["postgres"].environment
    store = urlsplit(compose.services["mlflow"].environment["MLFLOW_BACKEND_STORE_URI"])
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


def test_analysts_get_a_read_only_clickhouse_account(compose: Compose) -> None:
    import xml.etree.ElementTree as ET  # noqa: S405  # our own file, not untrusted input

    from tests.unit._compose_schema import ROOT

    clickhouse = compose.services["clickhouse"]
    mounts = {m.target: m for m in clickhouse.volumes}
    mount = mounts["/etc/clickhouse-server/users.d/analyst.xml"]
    assert mount.type == "bind" and mount.read_only
    assert mount.source == "./infra/clickhouse/users.d/analyst.xml"
    root = ET.parse(ROOT / mount.source).getroot()  # noqa: S314
    user = root.find("users/analyst")
    assert user is not None
    # The password comes from the server's environment, which compose fills from .env.
    password = user.find("password")
    assert password is not None and not (password.text or "").strip()
    assert password.get("from_env") == "CLICKHOUSE_ANALYST_PASSWORD"
    assert (
        clickhouse.environment["CLICKHOUSE_ANALYST_PASSWORD"]
        == (SAMPLE_ENV["CLICKHOUSE_ANALYST_PASSWORD"])
    )
    profile = root.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") in {"1", "2"}
    assert user.findtext("access_management") == "0"
