from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings, settings_env
from pipeline.errors import ConfigError, StackError
from pipeline.stack.topics import check_brokers, load_spec, new_topic_config, spec_path


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


def test_replication_comes_from_settings_not_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("replication_factor: 3\ntopics:\n  a: {partitions: 1}\n")
    with pytest.raises(ConfigError, match="PIPELINE_TOPICS__REPLICATION_FACTOR"):
        load_spec(path)
    path.write_text("topics:\n  a: {partitions: 1, config: {min.insync.replicas: '2'}}\n")
    with pytest.raises(ConfigError, match="PIPELINE_TOPICS__MIN_INSYNC_REPLICAS"):
        load_spec(path)


def test_replication_settings_default_to_one_broker_and_are_checked() -> None:
    assert (Settings().topics.replication_factor, Settings().topics.min_insync_replicas) == (1, 1)
    settings = load_settings(topics={"replication_factor": 3, "min_insync_replicas": 2})
    assert settings.topics.min_insync_replicas == 2
    with pytest.raises(ConfigError, match=r"PIPELINE_TOPICS__MIN_INSYNC_REPLICAS: .*\(3\)"):
        load_settings(topics={"replication_factor": 3, "min_insync_replicas": 4})
    with pytest.raises(ConfigError, match="PIPELINE_TOPICS__REPLICATION_FACTOR"):
        load_settings(topics={"replication_factor": 0})


def test_replication_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TOPICS__REPLICATION_FACTOR", "3")
    monkeypatch.setenv("PIPELINE_TOPICS__MIN_INSYNC_REPLICAS", "2")
    settings = Settings()
    assert (settings.topics.replication_factor, settings.topics.min_insync_replicas) == (3, 2)
    env = settings_env(settings)
    assert env["PIPELINE_TOPICS__REPLICATION_FACTOR"] == "3"
    assert env["PIPELINE_TOPICS__MIN_INSYNC_REPLICAS"] == "2"


def test_new_topics_get_min_insync_replicas_and_keep_their_config() -> None:
    settings = load_settings(topics={"replication_factor": 3, "min_insync_replicas": 2})
    spec = load_spec(spec_path(settings))
    config = new_topic_config(settings, spec.topics["policy-control"])
    assert config["min.insync.replicas"] == "2"
    assert config["cleanup.policy"] == "compact"


def test_fewer_brokers_than_replicas_is_refused_in_one_line() -> None:
    settings = load_settings(topics={"replication_factor": 3, "min_insync_replicas": 2})
    check_brokers(settings, 3)
    with pytest.raises(StackError) as err:
        check_brokers(settings, 2)
    assert str(err.value).count("\n") == 0
    assert "2 live broker(s)" in str(err.value)
    assert "PIPELINE_TOPICS__REPLICATION_FACTOR=3" in str(err.value)
