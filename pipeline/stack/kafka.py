"""The embedded Apache Kafka broker: jars from Maven, KRaft storage, readiness."""

from __future__ import annotations

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


def render_config(settings: Settings) -> Path:
    """Write server.properties for the current settings; return its path."""
    host, port = listen_address(settings)
    base = kafka_dir(settings)
    template = Template((settings.infra_dir / "kafka" / "server.properties.template").read_text())
    text = template.substitute(
        host=host,
        port=port,
        controller_port=settings.embedded.kafka_controller_port,
        log_dirs=base / "data",
    )
    path = base / "server.properties"
    path.write_text(text)
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
