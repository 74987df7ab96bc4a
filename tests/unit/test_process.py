from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import PortInUseError
from pipeline.stack.process import ProcessTable, port_in_use, require_free_port


def test_spawn_and_stop_a_process(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path / "run")
    record = table.spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        tmp_path / "sleeper.log",
        dict(os.environ),
    )
    assert table.alive("sleeper") == record
    assert table.stop("sleeper", timeout_s=5)
    assert table.alive("sleeper") is None
    assert not (tmp_path / "run" / "sleeper.pid").exists()


def test_stop_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        # A stale pid file whose pid now belongs to someone else (other start time).
        (run / "kafka.pid").write_text(
            json.dumps({"pid": foreign.pid, "start_ticks": 1, "argv": ["java"], "log": "x"})
        )
        table = ProcessTable(run)
        assert table.alive("kafka") is None
        assert table.stop("kafka") is False
        assert foreign.poll() is None, "a foreign process was signalled"
    finally:
        foreign.kill()
        foreign.wait()


def test_port_in_use_is_reported_with_the_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(PortInUseError, match="PIPELINE_X"):
            require_free_port("svc", "127.0.0.1", port, "PIPELINE_X")
    assert not port_in_use("127.0.0.1", port)


def test_missing_java_or_maven_is_one_line_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.errors import PrerequisiteError
    from pipeline.stack.kafka import require_tool

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PrerequisiteError) as info:
        require_tool("mvn", "Apache Maven (e.g. `apt-get install maven`)")
    message = str(info.value)
    assert "\n" not in message
    assert "`mvn` not found on PATH: install Apache Maven" in message


def test_embedded_broker_refuses_a_remote_bootstrap_server() -> None:
    from pipeline.config import load_settings
    from pipeline.errors import ConfigError
    from pipeline.stack.kafka import listen_address

    settings = load_settings(kafka={"bootstrap_servers": "kafka.example.net:9092"})
    with pytest.raises(ConfigError, match="PIPELINE_KAFKA__BOOTSTRAP_SERVERS"):
        listen_address(settings)


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    # StorageTool reads an id like "-abc" as an option: about 1 start in 64 failed.
    from pipeline.stack.kafka import _kafka_uuid

    assert not any(_kafka_uuid().startswith("-") for _ in range(2000))


def test_a_tethered_stack_stops_when_its_owner_is_killed(tmp_path: Path) -> None:
    from pipeline.stack.process import start_ticks
    from pipeline.stack.reaper import tether

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    table = ProcessTable(tmp_path / "run")
    services = [
        table.spawn(name, [sys.executable, "-c", "import time; time.sleep(60)"],
                    tmp_path / f"{name}.log", dict(os.environ))
        for name in ("kafka", "mlflow")
    ]  # fmt: skip
    reaper = tether(tmp_path / "run", owner=owner.pid, poll_s=0.1)
    try:
        time.sleep(0.5)
        assert all(table.alive(r.name) == r for r in services)  # the owner lives: nothing stops
        owner.kill()  # no chance to clean up
        owner.wait()
        assert reaper.wait(timeout=30) == 0
        assert all(start_ticks(r.pid) is None for r in services)
        assert not list((tmp_path / "run").glob("*.pid"))
    finally:
        reaper.kill()
        for r in services:
            table.stop(r.name, timeout_s=5)
