"""The stream worker against the real broker and warehouse: joins, dead letters, exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.errors import TopicsError, WorkerCrashedError
from pipeline.stream.runner import Worker
from pipeline.stream.sink import sink_group
from schemas import DeadLetter, EMLabel, InferenceEvent, Message, Outcome, UserFeedback
from schemas.examples import inference_event
from tests.integration._stream import RunningWorker, start_worker
from tests.integration.support import (
    committed_offsets,
    eventually,
    query,
    read_topic,
    with_prefix,
)

pytestmark = pytest.mark.integration

FAST = StreamSettings(
    join_window_s=4.0,
    sweep_interval_s=0.5,
    commit_interval_s=0.5,
    sink_batch_max_s=0.3,
    sink_retry_initial_s=0.05,
    shutdown_timeout_s=20.0,
)


@pytest.fixture
def running(isolated: Settings) -> Iterator[RunningWorker]:
    run = start_worker(isolated, FAST)
    yield run
    run.halt()
    assert run.errors == []


def produce(settings: Settings, *messages: Message | tuple[str, bytes | None, bytes]) -> None:
    producer = Producer({**settings.kafka.client_config(), "linger.ms": 0})
    topics = {
        InferenceEvent: "inference-events",
        EMLabel: "em-labels",
        UserFeedback: "user-feedback",
    }
    for message in messages:
        if isinstance(message, tuple):
            topic, key, value = message
        else:
            topic, value = topics[type(message)], message.to_bytes()
            key = getattr(message, "request_id").encode()  # noqa: B009  # every input has one
        producer.produce(settings.topic(topic), key=key, value=value)
    assert producer.flush(30) == 0


def final_outcome(settings: Settings, request_id: str, version: int) -> tuple[Any, ...]:
    sql = (
        "SELECT version, labeled, em, em_full, feedback_count, negative_feedback, checkpoints "
        "FROM outcomes FINAL WHERE request_id = %(rid)s"
    )

    def probe() -> tuple[Any, ...] | None:
        found = query(settings, sql, rid=request_id)
        return found[0] if found and found[0][0] >= version else None

    return eventually(probe, what=f"outcome {request_id} v{version}")


def request(tag: str) -> tuple[InferenceEvent, EMLabel, UserFeedback]:
    rid = f"req-{tag}-{uuid.uuid4().hex[:8]}"
    event = inference_event().model_copy(update={"request_id": rid, "event_id": f"ev-{rid}"})
    now = datetime.now(UTC)
    label = EMLabel(
        label_id=f"lb-{rid}", request_id=rid, labeler_id="ann", ts=now, gold_answers=("paris",)
    )
    thumbs = UserFeedback(feedback_id=f"fb-{rid}", request_id=rid, ts=now, kind="thumbs", rating=-1)
    return event, label, thumbs


def test_in_order_join_lands_in_clickhouse(running: RunningWorker) -> None:
    event, label, thumbs = request("inorder")
    # Order across topics is not defined: wait for the join before the feedback.
    produce(running.settings, event, label)
    assert final_outcome(running.settings, event.request_id, 2)[:3] == (2, True, True)
    produce(running.settings, thumbs)
    assert final_outcome(running.settings, event.request_id, 3) == (3, True, True, True, 1, 1, 3)
    points = query(
        running.settings,
        "SELECT idx, tokens, em FROM trajectory_points FINAL WHERE request_id = %(r)s ORDER BY idx",
        r=event.request_id,
    )
    assert points == [(0, 16, False), (1, 32, True), (2, 57, True)]
    versions = sorted(
        Outcome.from_bytes(m.value()).version
        for m in read_topic(running.settings.kafka, "outcomes")
    )
    assert versions == [2, 3]


def test_out_of_order_and_duplicated_inputs_give_the_same_outcome(running: RunningWorker) -> None:
    event, label, thumbs = request("shuffled")
    produce(running.settings, thumbs, label, thumbs, label, event, event, thumbs)
    assert final_outcome(running.settings, event.request_id, 3) == (3, True, True, True, 1, 1, 3)
    time.sleep(2)  # give a wrongly counted duplicate time to show up
    count = query(
        running.settings,
        "SELECT count() FROM outcomes WHERE request_id = %(r)s",
        r=event.request_id,
    )
    assert count == [(1,)]  # only v3: the event came last, so nothing was emitted before


def test_unlabeled_requests_expire_and_orphans_are_counted(running: RunningWorker) -> None:
    event, _, thumbs = request("unlabeled")
    _, orphan_label, _ = request("orphan")
    produce(running.settings, event, thumbs, orphan_label)
    assert final_outcome(running.settings, event.request_id, 2) == (2, False, None, None, 1, 1, 3)
    eventually(
        lambda: running.worker.metrics.get("stream_orphans_total", kind="orphan_label") == 1,
        what="the orphan label to be counted",
    )


def test_malformed_input_is_dead_lettered_and_consumption_goes_on(running: RunningWorker) -> None:
    produce(running.settings, ("em-labels", b"k1", b"\x00not json"), ("user-feedback", None, b"{}"))
    event, label, _ = request("after-junk")
    produce(running.settings, event, label)
    final_outcome(running.settings, event.request_id, 2)
    letters = [
        DeadLetter.from_bytes(m.value()) for m in read_topic(running.settings.kafka, "dead-letters")
    ]
    by_topic = {letter.source_topic: letter for letter in letters}
    bad = by_topic[running.settings.topic("em-labels")]
    assert (bad.raw, bad.key, bad.error_kind, bad.offset) == (b"\x00not json", b"k1", "decode", 0)
    assert by_topic[running.settings.topic("user-feedback")].error_kind == "validate"
    counted = eventually(
        lambda: (
            query(
                running.settings,
                "SELECT sum(records) FROM dead_letter_counts WHERE source_topic LIKE %(p)s",
                p=running.settings.kafka.topic_prefix + "%",
            )[0][0]
            == 2
        ),
        what="two dead letters in ClickHouse",
    )
    assert counted


def _delete_groups(settings: Settings, *groups: str) -> None:
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.delete_consumer_groups(list(groups), request_timeout=30).values():
        future.result()


def test_outcomes_land_exactly_once_even_after_a_full_replay(isolated: Settings) -> None:
    requests = [request(f"once{i}") for i in range(30)]
    # A long window: entries must still be open when the replay re-reads the inputs.
    stream = FAST.model_copy(update={"join_window_s": 600.0})
    run = start_worker(isolated, stream)
    produce(isolated, *[m for trio in requests for m in trio])
    for event, _, _ in requests:
        final_outcome(isolated, event.request_id, 3)
    run.halt()
    assert run.errors == []
    ids = [event.request_id for event, _, _ in requests]
    count_sql = "SELECT count() FROM outcomes WHERE request_id IN %(ids)s"
    before = query(isolated, count_sql, ids=ids)[0][0]
    # Forget every committed offset: the joiner re-reads all inputs (its table
    # comes back from the changelog) and the sink re-reads every outcome.
    app_id = isolated.topic(FAST.app_id)
    _delete_groups(isolated, app_id, sink_group(isolated, FAST))
    replay = start_worker(isolated, stream)
    eventually(
        lambda: replay.worker.metrics.get("stream_records_total", topic="user-feedback") >= 30,
        what="the joiner to re-read its inputs",
    )
    eventually(
        lambda: replay.worker.metrics.total("sink_skipped_total") >= before,
        what="the sink to re-read every outcome",
    )
    replay.halt()
    assert replay.errors == []
    assert replay.worker.metrics.total("stream_outcomes_total") == 0  # all duplicates
    assert query(isolated, count_sql, ids=ids)[0][0] == before
    per_version = query(
        isolated,
        "SELECT max(c) FROM (SELECT count() AS c FROM outcomes WHERE request_id IN %(ids)s "
        "GROUP BY request_id, version)",
        ids=ids,
    )
    assert per_version == [(1,)]


def test_a_failing_agent_stops_the_worker_loudly(isolated: Settings) -> None:
    broken = threading.Event()

    def clock() -> datetime:
        if broken.is_set():
            msg = "injected failure"
            raise RuntimeError(msg)
        return datetime.now(UTC)

    # No sweeps, so the record's processing is the only caller of the clock.
    run = start_worker(isolated, FAST.model_copy(update={"sweep_interval_s": 3600.0}), clock=clock)
    broken.set()
    event, _, _ = request("crash")
    produce(isolated, event)
    run.thread.join(60)
    assert not run.thread.is_alive(), "the worker kept running after its agent failed"
    assert len(run.errors) == 1 and isinstance(run.errors[0], WorkerCrashedError)
    assert "injected failure" in str(run.errors[0])
    # The failed batch was never acknowledged: a restart reads the record again.
    group = isolated.topic(FAST.app_id)
    assert committed_offsets(isolated, group, ("inference-events",)) == 0


def test_inputs_with_unequal_partitions_are_refused(isolated: Settings) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}."
    settings = with_prefix(isolated, prefix)
    admin = AdminClient(settings.kafka.client_config())
    counts = {"inference-events": 6, "em-labels": 6, "user-feedback": 3, "outcomes": 1}
    counts["dead-letters"] = 1
    new = [NewTopic(settings.topic(name), num_partitions=n) for name, n in counts.items()]
    for future in admin.create_topics(new).values():
        future.result()
    with pytest.raises(TopicsError, match="not co-partitioned") as caught:
        Worker(settings, FAST).run()
    assert f"{prefix}user-feedback=3" in str(caught.value)


def test_rollups_count_each_request_once_however_many_versions(running: RunningWorker) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    segment = inference_event().segment.model_copy(update={"tenant": tenant})
    made = [request(f"rollup{i}") for i in range(4)]
    # Probe tokens (11 per request) are counted once per request too, and netted out.
    events = [e.model_copy(update={"segment": segment, "tokens_probe": 11}) for e, _, _ in made]
    wrong = made[2][1].model_copy(update={"gold_answers": ("Lyon",)})
    labels = [made[0][1], made[1][1], wrong]  # the fourth request stays unlabeled
    thumbs_up = made[1][2].model_copy(update={"rating": 1})
    produce(running.settings, *events, *labels, made[0][2], thumbs_up)
    for event, version in zip(events, (3, 3, 2, 1), strict=True):
        final_outcome(running.settings, event.request_id, version)
    sql = (
        "SELECT sum(requests), sum(labeled), sum(em), sum(feedback), sum(negative_feedback), "
        "sum(tokens_generated), sum(tokens_saved), sum(tokens_probe), sum(tokens_saved_net) "
        "FROM outcome_minutes WHERE tenant = %(t)s"
    )
    expected = (4, 3, 2, 2, 1, 4 * 57, 4 * (256 - 57), 4 * 11, 4 * (256 - 57 - 11))
    eventually(lambda: query(running.settings, sql, t=tenant) == [expected], what="the rollup")
