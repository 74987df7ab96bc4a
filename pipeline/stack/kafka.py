"""The embedded Apache Kafka broker: jars from Maven, KRaft storage, readiness."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from string import Template

from pipeline.config import Settings, is_loopback
from pipeline.errors import ConfigError, PrerequisiteError, StackError


def require_tool(tool: str, what: str) -> str:
    """The path of ``tool`` on PATH, or one line saying what to install."""
    found = shutil.which(tool)
    if found is None:
        msg = f"`{tool}` not found on PATH: install {what} to run the embedded Kafka broker"
        raise PrerequisiteError(msg)
    return found


def kafka_dir(settings: Settings) -> Path:
    """Where the broker keeps jars, config, data and logs."""
    return settings.state_dir / "kafka"


def listen_address(settings: Settings) -> tuple[str, int]:
    """The loopback address the embedded broker listens on, from the bootstrap servers."""
    host, port = settings.kafka.first_server
    if not is_loopback(host):
        msg = (
            "invalid setting PIPELINE_KAFKA__BOOTSTRAP_SERVERS: the embedded broker only runs "
            f"on loopback, got {host!r} (unset it, or do not run `pipeline up` against a cluster)"
        )
        raise ConfigError(msg)
    return host, port


def resolve_jars(settings: Settings) -> Path:
    """Copy the broker's classpath from Maven once per Kafka version; return the folder."""
    version = settings.embedded.kafka_version
    libs = kafka_dir(settings) / f"libs-{version}"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    require_tool("java", "a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    mvn = require_tool("mvn", "Apache Maven (e.g. `apt-get install maven`)")
    pom = settings.infra_dir / "kafka" / "pom.xml"
    if not pom.is_file():
        msg = f"invalid setting PIPELINE_INFRA_DIR: {pom} does not exist"
        raise ConfigError(msg)
    libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603  # fixed argv; no shell
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        msg = f"Maven could not resolve Kafka {version}: " + " | ".join(detail)
        raise StackError(msg)
    marker.touch()
    return libs


_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
# Characters that would break out of a JAAS quoted string or a properties line.
_JAAS_UNSAFE = frozenset('"\\\n\r')
_JAAS_USER = re.compile(r"^[A-Za-z0-9._-]{1,128}$")  # it also names a JAAS option


def _jaas_value(value: str, setting: str) -> str:
    if not value or _JAAS_UNSAFE.intersection(value):
        msg = (
            f"invalid setting {setting}: the embedded broker needs a non-empty value "
            "without quotes, backslashes or line breaks"
        )
        raise ConfigError(msg)
    return value


def listener_security(settings: Settings) -> tuple[str, str]:
    """The broker's listener protocol and the extra server.properties lines for it.

    The embedded broker follows the clients' ``PIPELINE_KAFKA__SECURITY_PROTOCOL``,
    as its port follows their bootstrap servers: PLAINTEXT (the default), or
    SASL_PLAINTEXT with the PLAIN mechanism, where the clients' username and
    password become the only account and both listeners (clients and the
    KRaft controller) require it. TLS needs certificates, which the embedded
    stack does not make; SCRAM needs accounts in the metadata log.
    """
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return "PLAINTEXT", ""
    if kafka.security_protocol != "SASL_PLAINTEXT" or (kafka.sasl_mechanism or "PLAIN") != "PLAIN":
        msg = (
            "invalid setting PIPELINE_KAFKA__SECURITY_PROTOCOL: the embedded broker serves "
            "PLAINTEXT, or SASL_PLAINTEXT with PIPELINE_KAFKA__SASL_MECHANISM=PLAIN; got "
            f"{kafka.security_protocol} / {kafka.sasl_mechanism} (use a real cluster for TLS "
            "or SCRAM)"
        )
        raise ConfigError(msg)
    user = kafka.sasl_username or ""
    if not _JAAS_USER.match(user):
        msg = (
            "invalid setting PIPELINE_KAFKA__SASL_USERNAME: the embedded broker needs a "
            f"username of letters, digits, '.', '_' or '-', got {user!r}"
        )
        raise ConfigError(msg)
    secret = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    password = _jaas_value(secret, "PIPELINE_KAFKA__SASL_PASSWORD")
    jaas = (
        f'{_PLAIN_LOGIN} required username="{user}" password="{password}" user_{user}="{password}";'
    )
    lines = [
        "sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={jaas}",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
    ]
    return "SASL_PLAINTEXT", "\n".join(lines)


def render_config(settings: Settings) -> Path:
    """Write server.properties for the current settings; return its path.

    The file may hold the SASL password, so only its owner can read it.
    """
    host, port = listen_address(settings)
    protocol, security = listener_security(settings)
    base = kafka_dir(settings)
    template = Template((settings.infra_dir / "kafka" / "server.properties.template").read_text())
    text = template.substitute(
        host=host,
        port=port,
        controller_port=settings.embedded.kafka_controller_port,
        log_dirs=base / "data",
        protocol=protocol,
        security=security,
    )
    path = base / "server.properties"
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_TRUNC
    return path


def java_argv(settings: Settings, libs: Path, main: str, *args: str) -> list[str]:
    """A java command line on the broker's classpath."""
    java = require_tool("java", "a Java 17+ runtime")
    logs = kafka_dir(settings) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    heap = settings.embedded.kafka_heap
    return [
        java,
        f"-Xmx{heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={settings.infra_dir / 'kafka' / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def format_storage(settings: Settings, libs: Path, config: Path) -> bool:
    """Format KRaft storage on first start; return True if it was formatted now."""
    data = kafka_dir(settings) / "data"
    if (data / "meta.properties").exists():
        return False
    cluster_id = _kafka_uuid()
    argv = java_argv(
        settings, libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)
    )
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        msg = f"formatting Kafka storage failed: {(result.stdout + result.stderr).strip()[-500:]}"
        raise StackError(msg)
    return True


def _kafka_uuid() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    import base64

    # An id starting with "-" would be read by StorageTool as an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_argv(settings: Settings) -> list[str]:
    """Resolve jars, render config, format storage; return the broker command line."""
    libs = resolve_jars(settings)
    config = render_config(settings)
    format_storage(settings, libs, config)
    return java_argv(settings, libs, "kafka.Kafka", str(config))


def broker_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**settings.kafka.client_config(), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except Exception:  # noqa: BLE001  # any failure means "not ready yet"
        return False
    return bool(metadata.brokers)
