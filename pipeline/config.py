"""Settings: the one place the environment is read.

Every variable starts with ``PIPELINE_``; nested sections use ``__``, e.g.
``PIPELINE_KAFKA__BOOTSTRAP_SERVERS``. Defaults point at the embedded stack on
loopback, so a fresh checkout runs with no configuration. The embedded stack
takes its ports from the same URLs the clients use, so the two cannot disagree.
Secrets are ``SecretStr`` and never appear in ``repr`` or logs. A secret the
embedded stack generated (the warehouse's writer password, under
``<state_dir>/secrets/``) fills in its setting when the environment leaves it
unset; see :mod:`pipeline.secret_store`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.controller.config import ControllerSettings
from pipeline.errors import ConfigError
from pipeline.node.config import NodeSettings
from pipeline.node.kafka import KafkaSettings
from pipeline.publisher.config import ControlSettings
from pipeline.secret_store import (
    MLFLOW_ADMIN_PASSWORD,
    MLFLOW_SERVICE_PASSWORD,
    WAREHOUSE_PASSWORD,
    read_secret,
    secret_path,
)
from pipeline.stream.config import StreamSettings

ENV_PREFIX = "PIPELINE_"
ENV_NESTED_DELIMITER = "__"

_Frozen = ConfigDict(frozen=True, extra="forbid")


def is_loopback(host: str) -> bool:
    """Return True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_SECRET_IN_URL = "secret_in_url"  # noqa: S105  # an error type name, not a secret


def _no_password_in_url(value: str, setting: str) -> str:
    """Refuse a URL that carries a password: URLs are printed, passwords never are."""
    if urlsplit(value).password is not None:
        raise PydanticCustomError(
            _SECRET_IN_URL,
            "the URL carries a password; put it in {setting} instead (URLs are shown in "
            "status output and errors, passwords never are)",
            {"setting": setting},
        )
    return value


class ClickHouseSettings(BaseModel):
    """How every component reaches ClickHouse (a server, or the embedded warehouse).

    ``username`` and ``password`` are the writer's account. On the embedded
    stack any other caller (no credentials, user ``default``) only reads; an
    unset password is read from the file ``pipeline up`` generated. ``cluster``
    chooses cluster mode.
    """

    model_config = _Frozen

    url: str = "http://127.0.0.1:8123"
    database: str = Field(default="earlystop", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    username: str = "earlystop"
    password: SecretStr = SecretStr("")
    cluster: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """A cluster of the server's ``remote_servers``: the migrations then create replicated
    local tables and ``Distributed`` tables on it (see :mod:`pipeline.warehouse.cluster`).
    None is one server, the embedded warehouse's only mode."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        _no_password_in_url(value, "PIPELINE_CLICKHOUSE__PASSWORD")
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            msg = f"expected http(s)://host:port, got {value!r}"
            raise ValueError(msg)
        return value.rstrip("/")

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port of the URL."""
        parts = urlsplit(self.url)
        default = 8443 if parts.scheme == "https" else 8123
        return parts.hostname or "", parts.port or default


class TopicSettings(BaseModel):
    """How the pipeline's topics are replicated when they are created.

    The embedded stack has one broker, hence 1/1. A production cluster should
    use 3/2: with producers on ``acks=all`` (every producer here), a write is
    acknowledged only once at least ``min_insync_replicas`` brokers hold it, so
    losing any one broker loses no acknowledged record and writes continue.
    """

    model_config = _Frozen

    replication_factor: int = Field(default=1, ge=1, le=16)
    min_insync_replicas: int = Field(default=1, ge=1, le=16)

    @field_validator("min_insync_replicas")
    @classmethod
    def _within_replicas(cls, value: int, info: ValidationInfo) -> int:
        replicas = info.data.get("replication_factor")
        if replicas is not None and value > replicas:
            msg = (
                f"must not exceed PIPELINE_TOPICS__REPLICATION_FACTOR ({replicas}): "
                f"no write with acks=all could ever succeed"
            )
            raise ValueError(msg)
        return value


_MLFLOW_USER = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"


class MlflowSettings(BaseModel):
    """How every component reaches the MLflow tracking server and registry.

    The server runs MLflow's basic-auth app. ``username`` and ``password`` are
    the login of this process; unset, the controller's service account
    (``service_username``, its password generated by ``pipeline up``) fills
    them in. ``admin_password`` is only for ``pipeline up`` (creating the
    service account), ``pipeline reviewers`` and the publisher's check of
    who may approve (MLflow shows a user's permissions to admins only).
    """

    model_config = _Frozen

    tracking_uri: str = "http://127.0.0.1:5000"
    username: str | None = Field(default=None, pattern=_MLFLOW_USER)
    password: SecretStr | None = None
    experiment: str = Field(default="earlystop-policies", min_length=1)
    admin_username: str = Field(default="admin", pattern=_MLFLOW_USER)
    admin_password: SecretStr | None = None
    service_username: str = Field(default="pipeline-controller", pattern=_MLFLOW_USER)
    """The controller's and publisher's account: the only one whose approvals may be automatic."""

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, value: str) -> str:
        return _no_password_in_url(value, "PIPELINE_MLFLOW__PASSWORD")

    @property
    def host_port(self) -> tuple[str, int] | None:
        """Host and port when the URI is HTTP, else None (a file or database store)."""
        parts = urlsplit(self.tracking_uri)
        if parts.scheme not in {"http", "https"}:
            return None
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


class EmbeddedSettings(BaseModel):
    """What only the embedded stack needs; its listening ports come from the client URLs."""

    model_config = _Frozen

    kafka_version: str = Field(default="4.1.1", pattern=r"^\d+\.\d+\.\d+$")
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_heap: str = Field(default="768m", pattern=r"^\d+[mg]$")
    start_timeout_s: float = Field(default=90.0, gt=0)


def _default_infra_dir() -> Path:
    # A source checkout (editable install, or the Docker image's /app) keeps
    # infra/ beside the package; a wheel install must set PIPELINE_INFRA_DIR.
    return Path(__file__).resolve().parent.parent / "infra"


class Settings(BaseSettings):
    """All settings. Build with :func:`load_settings` to get errors that name the variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    state_dir: Path = Path(".state")
    infra_dir: Path = Field(default_factory=_default_infra_dir)
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    mlflow: MlflowSettings = MlflowSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    node: NodeSettings = NodeSettings()
    stream: StreamSettings = StreamSettings()
    control: ControlSettings = ControlSettings()
    controller: ControllerSettings = ControllerSettings()

    @field_validator("state_dir", "infra_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Child processes may run elsewhere; a relative path would split the state.
        return value.expanduser().resolve()

    @property
    def warehouse_password_path(self) -> Path:
        """The embedded warehouse's generated writer password (mode 0600)."""
        return secret_path(self.state_dir, WAREHOUSE_PASSWORD)

    @property
    def mlflow_admin_password_path(self) -> Path:
        """The embedded MLflow's generated admin password (mode 0600)."""
        return secret_path(self.state_dir, MLFLOW_ADMIN_PASSWORD)

    @property
    def mlflow_service_password_path(self) -> Path:
        """The generated password of the controller's MLflow service account (mode 0600)."""
        return secret_path(self.state_dir, MLFLOW_SERVICE_PASSWORD)

    @property
    def chdb_path(self) -> Path:
        """Where the embedded warehouse keeps its ClickHouse data."""
        return (self.state_dir / "clickhouse").resolve()

    @property
    def chdb_dsn(self) -> str:
        """The clickhouse-connect DSN of the embedded engine (used by its owner only)."""
        return f"chdb://{self.chdb_path}"

    def topic(self, name: str) -> str:
        """The physical name of a logical topic (the prefix isolates tests and tenants)."""
        return f"{self.kafka.topic_prefix}{name}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``PIPELINE_*`` variables, to hand to a child process."""
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            key = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(key + ENV_NESTED_DELIMITER, value)
            elif isinstance(value, SecretStr):
                # An empty secret is left unset, so the child falls back as this
                # process did (to a generated secret under the state folder).
                if value.get_secret_value():
                    env[key] = value.get_secret_value()
            elif value is not None:
                env[key] = str(value.resolve() if isinstance(value, Path) else value)

    walk(ENV_PREFIX, settings)
    return env


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error location."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p).upper() for p in loc)


def with_stored_secrets(settings: Settings) -> Settings:
    """``settings`` with the secrets nobody set taken from the state folder's files.

    When neither the environment nor an override set it, the file ``pipeline
    up`` generated (if there is one) supplies: the warehouse's writer password
    (``clickhouse.password``); the MLflow login, as the controller's service
    account (``mlflow.username`` and ``mlflow.password``, only when neither is
    set, or the username set is the service account's); and the MLflow admin
    password (``mlflow.admin_password``). An explicit value, even empty, wins.

    Raises:
        SecretFileError: a file exists but is readable by others, or unreadable.
    """
    update: dict[str, object] = {}
    if "password" not in settings.clickhouse.model_fields_set:
        stored = read_secret(settings.warehouse_password_path)
        if stored is not None:
            update["clickhouse"] = settings.clickhouse.model_copy(update={"password": stored})
    mlflow = settings.mlflow
    ml_update: dict[str, object] = {}
    if mlflow.admin_password is None:
        admin = read_secret(settings.mlflow_admin_password_path)
        if admin is not None:
            ml_update["admin_password"] = admin
    if mlflow.password is None and mlflow.username in {None, mlflow.service_username}:
        service = read_secret(settings.mlflow_service_password_path)
        if service is not None:
            ml_update.update(username=mlflow.service_username, password=service)
    if ml_update:
        update["mlflow"] = mlflow.model_copy(update=ml_update)
    return settings.model_copy(update=update) if update else settings


def load_settings(**overrides: object) -> Settings:
    """Read the environment once, then the stored secrets; errors name the bad variable.

    Raises:
        ConfigError: a setting is invalid (the message names its variable), or a
            stored secret's file is unsafe (``SecretFileError``, naming the file).
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]  # overrides are validated here
    except ValidationError as exc:
        first = exc.errors()[0]
        name = env_name(first["loc"])
        shown = first["input"]
        secret = first["type"] == _SECRET_IN_URL or any(
            word in name for word in ("PASSWORD", "SECRET", "KEY", "TOKEN")
        )
        got = "" if isinstance(shown, dict) or secret else f" (got {shown!r})"
        msg = f"invalid setting {name}: {first['msg']}{got}"
        raise ConfigError(msg) from None
    return with_stored_secrets(settings)
