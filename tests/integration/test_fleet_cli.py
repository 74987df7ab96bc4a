"""`pipeline fleet` on the real broker: real nodes apply, refuse and fall behind."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.node import Node
from pipeline.node.testing import publish, signed_update
from tests.integration._control import acks_matching, global_policy, trusting
from tests.integration.support import run_cli, stack_settings

pytestmark = pytest.mark.integration

KEY = b"fleet-signing-key"


@pytest.fixture
def node_config() -> dict[str, object]:
    """What every node of this module gets from ``start_node``: the signing key."""
    return trusting("test-key", KEY)


def publish_version(settings: Settings, version: int) -> None:
    publish(settings.kafka, signed_update(global_policy(), version=version, key=KEY))


def fleet(settings: Settings, *args: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run ``pipeline fleet --json ARGS``: exit code, rows by node id, stderr."""
    done = run_cli(settings, "fleet", "--json", *args)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, {r["node_id"]: r for r in rows}, done.stderr


def test_nodes_that_applied_are_listed_and_a_stopped_one_falls_behind(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    nodes = {name: start_node(name) for name in ("node-a", "node-b", "node-c")}
    publish_version(isolated, 1)
    for node in nodes.values():
        assert node.subscriber.wait_for_version(1, timeout=30), node.settings.node_id
    acks_matching(isolated.kafka, lambda a: a.version == 1 and a.status == "applied", 3)

    code, rows, err = fleet(isolated, "--since", "10m")
    assert code == 0, err
    assert sorted(rows) == ["node-a", "node-b", "node-c"]
    for row in rows.values():
        assert (row["version"], row["production"], row["state"]) == (1, 1, "current")
        assert row["applied_at"] is not None and row["refusal"] is None

    nodes["node-c"].close(timeout=5)
    publish_version(isolated, 2)
    for name in ("node-a", "node-b"):
        assert nodes[name].subscriber.wait_for_version(2, timeout=30), name
    acks_matching(isolated.kafka, lambda a: a.version == 2 and a.status == "applied", 2)

    code, rows, err = fleet(isolated, "--since", "10m", "--max-behind", "10m")
    assert code == 0, err
    assert {n: (r["version"], r["state"]) for n, r in rows.items()} == {
        "node-a": (2, "current"),
        "node-b": (2, "current"),
        "node-c": (1, "behind"),
    }
    assert rows["node-c"]["production"] == 2
    assert rows["node-c"]["behind_since"] is not None

    time.sleep(2.5)
    code, rows, err = fleet(isolated, "--since", "10m", "--max-behind", "2s")
    assert code == 1, err
    assert [n for n, r in rows.items() if r["state"] == "overdue"] == ["node-c"]
    assert rows["node-c"]["behind_s"] > 2

    table = run_cli(isolated, "fleet", "--since", "10m", "--max-behind", "2s")
    assert table.returncode == 1, table.stderr
    assert "node-c" in table.stdout and "overdue for" in table.stdout
    assert "production default v2" in table.stdout


def test_a_node_that_refused_shows_the_reason(
    isolated: Settings, start_node: Callable[..., Node]
) -> None:
    trusted = start_node("node-ok")
    other = start_node("node-wrong-key", signing_keys={"test-key": SecretStr("another key")})
    publish_version(isolated, 1)
    assert trusted.subscriber.wait_for_version(1, timeout=30)
    assert other.subscriber.wait_for_refusals(1, timeout=30)
    acks_matching(isolated.kafka, lambda a: a.version == 1, 2)

    code, rows, err = fleet(isolated, "--since", "10m")
    assert code == 0, err
    assert (rows["node-ok"]["version"], rows["node-ok"]["state"]) == (1, "current")
    refusing = rows["node-wrong-key"]
    assert (refusing["version"], refusing["refused_version"]) == (None, 1)
    assert "does not verify" in refusing["refusal"]
    assert (refusing["state"], refusing["production"]) == ("behind", 1)

    code, rows, err = fleet(isolated, "--since", "10m", "--max-behind", "0s")
    assert code == 1, err
    assert [n for n, r in rows.items() if r["state"] == "overdue"] == ["node-wrong-key"]


def test_kafka_unreachable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    nowhere = stack_settings(tmp_path)  # free ports, nothing started

    done = run_cli(nowhere, "fleet", "--timeout", "2")

    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: ") and "could not be read" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""
