"""Start, stop and report the embedded stack: Kafka, the warehouse, MLflow.

`up` starts every service that is not already running, waits for all of them
to answer, creates the topics, and on any failure stops exactly what it
started, so nothing is left half-started. Before the warehouse's first start
it generates the writer password (see :func:`ensure_warehouse_password`);
before MLflow's, its admin and service-account passwords, and once MLflow
answers it creates the service account (see :mod:`pipeline.stack.mlflow_auth`).
`down` stops only processes recorded in this state folder's pid files.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import Settings, is_loopback, settings_env
from pipeline.errors import ConfigError, StackError
from pipeline.secret_store import ensure_secret
from pipeline.stack import kafka, mlflow_auth, reaper
from pipeline.stack.mlflow_store import ensure_database
from pipeline.stack.process import SERVICES, PidRecord, ProcessTable, require_free_port, tail
from pipeline.stack.topics import ensure_topics


@dataclass(frozen=True)
class ServiceStatus:
    """One line of `pipeline status`."""

    name: str
    url: str
    up: bool
    pid: int | None
    detail: str = ""


@dataclass(frozen=True)
class Service:
    """An embedded service: how to start it and how to tell it is ready."""

    name: str
    url: str
    ports: tuple[tuple[str, int, str], ...]  # host, port, the setting that picks it
    argv: Callable[[], list[str]]
    ready: Callable[[], bool]
    prepare: Callable[[], object] | None = None  # runs before the first spawn
    env: tuple[tuple[str, str], ...] = ()  # extra environment for this service
    secret_env: Callable[[], dict[str, str]] | None = None  # built at spawn, never shown


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310  # http(s) URL from settings
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _loopback_port(url: str, setting: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    if not is_loopback(host) or port is None:
        msg = (
            f"invalid setting {setting}: the embedded stack serves on a loopback host:port, "
            f"got {url!r}"
        )
        raise ConfigError(msg)
    return host, port


def services(settings: Settings) -> list[Service]:
    """The embedded services in start order."""
    khost, kport = kafka.listen_address(settings)
    chost, cport = _loopback_port(settings.clickhouse.url, "PIPELINE_CLICKHOUSE__URL")
    mhost, mport = _loopback_port(settings.mlflow.tracking_uri, "PIPELINE_MLFLOW__TRACKING_URI")
    mlflow_dir = settings.state_dir / "mlflow"
    return [
        Service(
            name="kafka",
            url=f"kafka://{khost}:{kport}",
            ports=(
                (khost, kport, "PIPELINE_KAFKA__BOOTSTRAP_SERVERS"),
                (khost, settings.embedded.kafka_controller_port,
                 "PIPELINE_EMBEDDED__KAFKA_CONTROLLER_PORT"),
            ),
            argv=lambda: kafka.broker_argv(settings),
            ready=lambda: kafka.broker_ready(settings),
        ),
        Service(
            name="clickhouse",
            url=f"{settings.clickhouse.url} (chdb engine at {settings.chdb_path})",
            ports=((chost, cport, "PIPELINE_CLICKHOUSE__URL"),),
            argv=lambda: [sys.executable, "-m", "pipeline.stack.clickhouse"],
            ready=lambda: http_ok(f"{settings.clickhouse.url}/ping"),
        ),
        Service(
            name="mlflow",
            url=settings.mlflow.tracking_uri,
            ports=((mhost, mport, "PIPELINE_MLFLOW__TRACKING_URI"),),
            argv=lambda: [
                sys.executable, "-m", "mlflow", "server",
                "--app-name", "basic-auth",
                "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination", str(mlflow_dir / "artifacts"),
                "--serve-artifacts",
                "--host", mhost,
                "--port", str(mport),
                "--workers", "1",
            ],
            ready=lambda: http_ok(f"{settings.mlflow.tracking_uri}/health"),
            prepare=lambda: ensure_database(mlflow_dir / "mlflow.db", mlflow_dir / "artifacts"),
            # The server's job runner forks eight ~240 MB huey workers for GenAI
            # features the policy registry never uses; on a 2-core machine that
            # costs seconds of start-up and gigabytes of memory.
            env=(("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),),
            # The basic-auth app's configuration, admin password and CSRF key.
            secret_env=lambda: mlflow_auth.server_env(settings),
        ),
    ]  # fmt: skip


def _table(settings: Settings) -> ProcessTable:
    return ProcessTable(settings.state_dir / "run")


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings_env(settings))
    return env


def ensure_warehouse_password(settings: Settings) -> tuple[Settings, bool]:
    """``settings`` with the warehouse's writer password; whether it was generated now.

    A password set in the environment (or read from the state folder by
    ``load_settings``) is kept. Otherwise the state folder's file supplies it,
    created first (mode 0600) if there is none. An explicitly empty password
    stays empty, and the warehouse then refuses to start.

    Raises:
        SecretFileError: the existing file is readable by others, or unreadable.
    """
    ch = settings.clickhouse
    if ch.password.get_secret_value() or "password" in ch.model_fields_set:
        return settings, False
    value, created = ensure_secret(settings.warehouse_password_path)
    clickhouse = ch.model_copy(update={"password": value})
    return settings.model_copy(update={"clickhouse": clickhouse}), created


def up(
    settings: Settings,
    on_event: Callable[[str], None] = lambda _: None,
    only: Collection[str] | None = None,
) -> dict[str, str]:
    """Start the stack (or the services named in ``only``); report per service and topic."""
    table = _table(settings)
    started: list[tuple[Service, PidRecord]] = []
    report: dict[str, str] = {}
    if only is None or "clickhouse" in only:
        settings, generated = ensure_warehouse_password(settings)
        if generated:
            where = f"{settings.warehouse_password_path} (mode 0600, used by every writer)"
            report["warehouse writer password"] = f"generated in {where}"
            on_event(f"generated the warehouse writer password in {where}")
    with_mlflow = only is None or "mlflow" in only
    if with_mlflow:
        settings, files = mlflow_auth.ensure_secrets(settings)
        for path in files:
            report[f"secret {Path(path).name}"] = f"generated in {path} (mode 0600)"
            on_event(f"generated {path} (mode 0600)")
    chosen = [svc for svc in services(settings) if only is None or svc.name in only]
    try:
        for svc in chosen:
            record = table.alive(svc.name)
            if record is not None:
                report[svc.name] = f"already running (pid {record.pid})"
                continue
            for host, port, setting in svc.ports:
                require_free_port(svc.name, host, port, setting)
            if svc.prepare is not None:
                svc.prepare()
            log = settings.state_dir / "logs" / f"{svc.name}.log"
            secret_env = svc.secret_env() if svc.secret_env is not None else {}
            env = {**_child_env(settings), **dict(svc.env), **secret_env}
            record = table.spawn(svc.name, svc.argv(), log, env)
            started.append((svc, record))
            on_event(f"started {svc.name} (pid {record.pid}), waiting for it to answer")
        deadline = time.monotonic() + settings.embedded.start_timeout_s
        for svc, record in started:
            _wait_ready(svc, record, table, deadline)
            report[svc.name] = f"started (pid {record.pid})"
            on_event(f"{svc.name} is up at {svc.url}")
        if with_mlflow:
            report["mlflow accounts"] = mlflow_auth.ensure_service_account(settings)
        if any(svc.name == "kafka" for svc in chosen):
            for topic, state in ensure_topics(settings).items():
                report[f"topic {topic}"] = state
    except BaseException:
        for svc, _ in reversed(started):
            table.stop(svc.name)
        raise
    return report


def _wait_ready(svc: Service, record: PidRecord, table: ProcessTable, deadline: float) -> None:
    while time.monotonic() < deadline:
        if svc.ready():
            return
        if table.exited(record):
            msg = f"{svc.name} exited during start; last lines of {record.log}:\n{tail(record.log)}"
            raise StackError(msg)
        time.sleep(0.25)
    msg = f"{svc.name} did not answer at {svc.url} in time; see {record.log}:\n{tail(record.log)}"
    raise StackError(msg)


def down(settings: Settings) -> dict[str, str]:
    """Stop what `up` started in this state folder, in reverse order."""
    table = _table(settings)
    report: dict[str, str] = {}
    for svc in reversed(_names()):
        record = table.alive(svc)
        report[svc] = f"stopped (pid {record.pid})" if table.stop(svc) and record else "not running"
    return report


def _names() -> list[str]:
    return list(SERVICES)


@contextmanager
def tethered(settings: Settings) -> Iterator[None]:
    """Inside it, this state folder's stack is stopped if the calling process ends, even killed.

    For stacks that must not outlive their owner (test sessions, benchmarks):
    start and stop the stack inside the block; leaving it ends the reaper.
    """
    proc = reaper.tether(settings.state_dir / "run")
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service: up or down, its URL, and the pid when this stack started it."""
    table = _table(settings)
    result = []
    for svc in services(settings):
        record = table.alive(svc.name)
        up_now = svc.ready()
        detail = ""
        if up_now and record is None:
            detail = "answering, but not started by this state folder"
        elif record is not None and not up_now:
            detail = f"process running but not answering; see {record.log}"
        result.append(
            ServiceStatus(svc.name, svc.url, up_now, record.pid if record else None, detail)
        )
    return result


def log_dir(settings: Settings) -> Path:
    """Where service logs go."""
    return settings.state_dir / "logs"
