"""The stream pipeline in tests: inputs, the worker or the sink on a thread, consumer lags.

The worker as a separate process, to kill, is ``_faults.WorkerProcess``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from pipeline.stream.metrics import Metrics
from pipeline.stream.runner import Worker
from pipeline.stream.sink import Sink, sink_group
from pipeline.stream.writer import ClickHouseWriter
from schemas import EMLabel, InferenceEvent, Outcome, Segment, UserFeedback
from schemas.examples import inference_event
from tests.integration.support import committed_offsets, group_lag, partition_lags, query

# -- inputs ----------------------------------------------------------------------------


def make_request(rid: str, tenant: str) -> tuple[InferenceEvent, EMLabel]:
    """A finished exploration request and its label, stamped now."""
    now = datetime.now(UTC)
    event = inference_event().model_copy(
        update={
            "request_id": rid,
            "event_id": f"e-{rid}",
            "ts": now,
            "segment": Segment(task="qa", length_bucket="short", tenant=tenant),
        }
    )
    label = EMLabel(
        label_id=f"l-{rid}", request_id=rid, labeler_id="ann", ts=now, gold_answers=("paris",)
    )
    return event, label


def feedback(rid: str) -> UserFeedback:
    return UserFeedback(
        feedback_id=f"fb-{rid}", request_id=rid, ts=datetime.now(UTC), kind="thumbs", rating=-1
    )


def label_producer(settings: Settings, **extra: Any) -> Producer:
    """What a labeler would use: idempotent, acks from all replicas, retries for minutes."""
    return Producer(
        {
            **settings.kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "delivery.timeout.ms": 180_000,
            **extra,
        }
    )


def send_verdict_request(settings: Settings, prefix: str) -> str:
    """One inference event and a label with verdict True for it, delivered; its request id."""
    rid = f"{prefix}-{uuid.uuid4().hex[:8]}"
    event = inference_event().model_copy(update={"request_id": rid, "event_id": f"e-{rid}"})
    label = EMLabel(
        label_id=f"l-{rid}", request_id=rid, labeler_id="a", ts=datetime.now(UTC), verdict=True
    )
    producer = Producer(settings.kafka.client_config())
    producer.produce(settings.topic("inference-events"), key=rid.encode(), value=event.to_bytes())
    producer.produce(settings.topic("em-labels"), key=rid.encode(), value=label.to_bytes())
    assert producer.flush(30) == 0
    return rid


# -- the stream worker and sink on a thread --------------------------------------------


@dataclass
class Background:
    """A ``run(stop)`` loop on a daemon thread, and whatever it raised."""

    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException]

    def halt(self, timeout_s: float = 60.0) -> None:
        """Set ``stop`` and wait for the loop to return."""
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the loop did not stop"


def in_background(run: Callable[[threading.Event], object]) -> Background:
    """Start ``run(stop)`` on a daemon thread."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return Background(stop, thread, errors)


@dataclass
class RunningWorker(Background):
    """A stream :class:`Worker` running on a thread, with the settings it was given."""

    settings: Settings
    worker: Worker


def start_worker(settings: Settings, stream: StreamSettings, **kw: Any) -> RunningWorker:
    """Start a stream worker on a thread; return once it is ready (joiner and sink started)."""
    worker = Worker(settings, stream, **kw)
    loop = in_background(worker.run)
    deadline = time.monotonic() + 90
    while not worker.ready.wait(0.2):
        assert not loop.errors, loop.errors
        assert time.monotonic() < deadline, "the worker did not start"
    return RunningWorker(loop.stop, loop.thread, loop.errors, settings, worker)


SINK_STREAM = StreamSettings(
    sink_batch_rows=50, sink_batch_max_s=0.2, sink_retry_initial_s=0.05, shutdown_timeout_s=4.0
)
"""Small batches and quick retries, for the sink tests."""


def run_sink(settings: Settings, writer: ClickHouseWriter, metrics: Metrics) -> Background:
    """A :class:`Sink` with ``SINK_STREAM`` and this writer, on a thread."""
    return in_background(Sink(settings, SINK_STREAM, writer, metrics).run)


def sink_committed(settings: Settings) -> int:
    """The offsets the ``SINK_STREAM`` sink group has committed on ``outcomes``, summed."""
    return committed_offsets(settings, sink_group(settings, SINK_STREAM), ("outcomes",))


def unlabeled_outcomes(tag: str, n: int) -> list[Outcome]:
    """``n`` unlabeled first-version outcomes with request ids ``sink-{tag}-{i}``."""
    made = []
    for i in range(n):
        rid = f"sink-{tag}-{i}"
        event = inference_event().model_copy(update={"request_id": rid, "event_id": f"e-{rid}"})
        made.append(
            Outcome(
                request_id=rid, event=event, labeled=False, version=1,
                joined_at=datetime.now(UTC),
            )
        )  # fmt: skip
    return made


def produce_outcomes(settings: Settings, items: list[Outcome]) -> None:
    """Put outcomes on the ``outcomes`` topic, keyed by request id, and wait for delivery."""
    producer = Producer(settings.kafka.client_config())
    for item in items:
        producer.produce(
            settings.topic("outcomes"), key=item.request_id.encode(), value=item.to_bytes()
        )
    assert producer.flush(30) == 0


def count_outcomes(settings: Settings, tag: str) -> int:
    """Outcome rows (before dedup) of :func:`unlabeled_outcomes` made with ``tag``."""
    sql = "SELECT count() FROM outcomes WHERE request_id LIKE %(p)s"
    return int(query(settings, sql, p=f"sink-{tag}-%")[0][0])


# -- the worker's consumer groups ------------------------------------------------------

INPUTS = ("inference-events", "em-labels", "user-feedback")


def joiner_lag(settings: Settings) -> int:
    """Input records the joiner has not committed yet."""
    return group_lag(settings, settings.topic(settings.stream.app_id), INPUTS)


def joiner_lag_detail(settings: Settings) -> str:
    """The joiner group's committed and end offsets per partition, for failure messages."""
    lags = partition_lags(settings, settings.topic(settings.stream.app_id), INPUTS)
    return "joiner committed/end: " + ", ".join(
        f"{t}[{p}] {c}/{h}" for (t, p), (c, h) in sorted(lags.items())
    )


def sink_lag(settings: Settings) -> int:
    """Outcome records the sink has not committed yet."""
    return group_lag(settings, sink_group(settings, settings.stream), ("outcomes",))
