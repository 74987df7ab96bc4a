"""The warehouse process: own the chdb path, migrate, serve HTTP until told to stop.

Start order makes failure cheap and readiness honest: take the path lock
(a second owner fails at once, naming the first), bind the port (taken port
fails before the engine opens), open the engine, apply migrations, and only
then listen, so ``/ping`` answering means the schema is in place. SIGTERM or
SIGINT stops accepting, lets running statements finish, closes the engine
(which flushes its data) and releases the lock.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, PipelineError, PortInUseError, StackError
from pipeline.stack.clickhouse.engine import Engine
from pipeline.stack.clickhouse.ownership import PathLock
from pipeline.stack.clickhouse.server import WarehouseHTTPServer
from pipeline.warehouse.migrations import apply_migrations

log = logging.getLogger("pipeline.stack.clickhouse")


def migrations_dir(settings: Settings) -> Path:
    """Where the DDL migrations live."""
    return settings.infra_dir / "clickhouse" / "migrations"


def _migrate(settings: Settings) -> list[str]:
    import clickhouse_connect

    # clickhouse-connect's chdb client opens its own connection to the engine
    # this process already owns, so the runner is the same one a server uses.
    client = clickhouse_connect.get_client(dsn=settings.chdb_dsn)
    try:
        return apply_migrations(client, settings.clickhouse.database, migrations_dir(settings))
    finally:
        client.close()


def _bind(settings: Settings, engine: Engine) -> WarehouseHTTPServer:
    host, port = settings.clickhouse.host_port
    password = settings.clickhouse.password.get_secret_value()
    try:
        return WarehouseHTTPServer(host, port, engine, settings.clickhouse.username, password)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        msg = (
            f"the warehouse cannot listen on {host}:{port}: the port is already in use "
            f"(stop that process, or choose another port with PIPELINE_CLICKHOUSE__URL)"
        )
        raise PortInUseError(msg) from None


def _require_writer_password(settings: Settings) -> None:
    if not settings.clickhouse.password.get_secret_value():
        msg = (
            "invalid setting PIPELINE_CLICKHOUSE__PASSWORD: the embedded warehouse needs a "
            "writer password (`pipeline up` generates one under the state folder's secrets/ "
            "when the variable is unset; an empty value would let any local process write)"
        )
        raise ConfigError(msg)


def _require_single_node(settings: Settings) -> None:
    if settings.clickhouse.cluster is not None:
        msg = (
            f"invalid setting PIPELINE_CLICKHOUSE__CLUSTER: the embedded warehouse is one "
            f"server and has no cluster {settings.clickhouse.cluster!r} (unset it, or point "
            f"PIPELINE_CLICKHOUSE__URL at the cluster and run `pipeline migrate`)"
        )
        raise ConfigError(msg)


def serve(settings: Settings, stop: threading.Event) -> None:
    """Run the warehouse until ``stop`` is set.

    Raises:
        ConfigError: the writer password is empty, or a cluster is configured.
    """
    _require_writer_password(settings)
    _require_single_node(settings)
    with PathLock(settings.chdb_path):
        engine = Engine(settings.chdb_path)
        server = _bind(settings, engine)
        try:
            engine.open()
            applied = _migrate(settings)
            log.info("migrations applied: %s", ", ".join(applied) or "none pending")
            server.activate()
            thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
            thread.start()
            log.info(
                "warehouse ready at %s (chdb engine at %s, database %s)",
                settings.clickhouse.url,
                settings.chdb_path,
                settings.clickhouse.database,
            )
            while not stop.wait(0.5):
                if not thread.is_alive():
                    msg = "the warehouse's HTTP server stopped unexpectedly; see the log above"
                    raise StackError(msg)
            log.info("stopping: no new connections, finishing running statements")
            server.shutdown()
            thread.join()
        finally:
            server.server_close()
            engine.close()
    log.info("warehouse stopped")


def main() -> int:
    """Entry point of ``python -m pipeline.stack.clickhouse``; returns the exit code."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve(load_settings(), stop)
    except PipelineError as exc:
        print(f"warehouse: {exc}", file=sys.stderr)
        return 1
    return 0
