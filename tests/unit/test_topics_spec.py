from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.stack.topics import load_spec, spec_path


def test_committed_spec_is_valid_and_control_topic_is_compacted() -> None:
    spec = load_spec(spec_path(Settings()))
    control = spec.topics["policy-control"]
    assert control.config["cleanup.policy"] == "compact"
    assert control.partitions == 1
    inputs = {spec.topics[t].partitions for t in spec.co_partitioned}
    assert len(inputs) == 1
    assert set(spec.co_partitioned) == {"inference-events", "em-labels", "user-feedback"}


def test_co_partitioning_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("co_partitioned: [a, b]\ntopics:\n  a: {partitions: 6}\n  b: {partitions: 3}\n")
    with pytest.raises(ConfigError, match="equal partition counts"):
        load_spec(path)


def test_unreadable_spec_gives_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the topic spec"):
        load_spec(tmp_path / "missing.yaml")
