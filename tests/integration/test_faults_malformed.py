"""Hostile input on every join input: dead-lettered whole, with reasons; the worker goes on.

A corpus of broken records (truncated JSON, wrong types, NaN and infinite
numbers, negative tokens, a 5 MB string, an unknown schema_version, binary
garbage, deep nesting, a tombstone, a key that is not the request id, ...)
goes to each of the three input topics of a running ``pipeline worker``
process. Every record must come back on ``dead-letters`` exactly once with
its raw bytes, key, source topic, partition, offset, the error and its kind;
none may leave a row in the outcome tables; and a valid request sent after
them (several times over: repeated ids are valid duplicates, not errors) is
joined once and lands in ClickHouse.

The 5 MB record is sent lz4-compressed, as any producer may: the broker's
1 MB limit applies to the compressed batch, so it reaches the topic.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from pipeline.config import Settings
from pipeline.stream.processor import InputRecord, RejectedError, decode
from schemas import DeadLetter, UserFeedback
from tests.integration._faults import WorkerProcess, tenant_name, with_stream, workers
from tests.integration._stream import feedback, make_request
from tests.integration.support import eventually, query, read_topic

pytestmark = pytest.mark.integration

HUGE = 5 * 1024 * 1024
MAX_WHOLE = 512 * 1024
"""Dead letters carry records up to this size whole; Kafka's record limit (1 MB) is near."""


@dataclass
class Bad:
    """One hostile record and the dead letter it must become."""

    topic: str
    what: str
    key: bytes | None
    value: bytes | None
    kind: str
    """The expected ``error_kind``: decode (not JSON) or validate (breaks the contract)."""
    partition: int = -1
    offset: int = -1


def _set(raw: bytes, field: str, literal: str) -> bytes:
    """Replace a top-level field's JSON value, keeping the rest byte for byte."""
    doc = json.loads(raw)
    assert field in doc, field
    marker = "\x00MARK\x00"
    doc[field] = marker
    text = json.dumps(doc, separators=(",", ":"))
    return text.replace(json.dumps(marker), literal).encode()


def _common(topic: str, rid: str, valid: bytes, field: str) -> list[Bad]:
    """Cases every input topic gets; ``field`` is a free-text field of its contract."""
    key = rid.encode()
    rng = random.Random(f"{topic}-garbage")  # noqa: S311  # reproducible junk, not a secret
    garbage = b"\x00\xff" + bytes(rng.randrange(256) for _ in range(2048))
    huge_text = "x" * HUGE
    huge = _set(valid, field, json.dumps([huge_text] if field == "gold_answers" else huge_text))
    assert len(huge) > HUGE
    cases = [
        ("truncated JSON", valid[: len(valid) // 2], "decode"),
        ("empty value", b"", "decode"),
        ("tombstone (no value)", None, "decode"),
        ("binary garbage", garbage, "decode"),
        ("invalid UTF-8 inside a string", valid.replace(rid.encode(), b"\xff\xfe" + key), "decode"),
        ("nesting 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "decode"),
        ("a number of 5,000 digits", _set(valid, "schema_version", "9" * 5000), "decode"),
        ("JSON null", b"null", "validate"),
        ("a JSON array", b"[1,2,3]", "validate"),
        ("unknown schema_version 2", _set(valid, "schema_version", "2"), "validate"),
        ("schema_version as a string", _set(valid, "schema_version", '"1"'), "validate"),
        ("wrong type: request_id a number", _set(valid, "request_id", "12345"), "validate"),
        ("an unknown field", valid[:-1] + b',"extra":1}', "validate"),
        ("a 5 MB string", huge, "validate"),
    ]
    made = [Bad(topic, what, key, value, kind) for what, value, kind in cases]
    made.append(Bad(topic, "key is not the request_id", b"someone-else", valid, "validate"))
    made.append(Bad(topic, "no key", None, valid, "validate"))
    return made


def corpus(tag: str) -> list[Bad]:
    """The hostile records for all three inputs; request ids start with ``bad-<tag>``."""
    made: list[Bad] = []
    rid = f"bad-{tag}-ev"
    event, label = make_request(rid, "badtenant")
    ev = event.to_bytes()
    made += _common("inference-events", rid, ev, "answer")
    for what, field, literal in [
        ("NaN confidence", "confidence", "NaN"),
        ("infinite confidence", "confidence", "Infinity"),
        ("negative infinite confidence", "confidence", "-Infinity"),
        ("confidence 1e999 (overflows to inf)", "confidence", "1e999"),
        ("confidence above 1", "confidence", "1.5"),
        ("NaN latency", "latency_ms", "NaN"),
        ("negative tokens", "tokens_generated", "-5"),
        ("negative prompt tokens", "tokens_prompt", "-1"),
        ("tokens over the budget", "tokens_generated", "100000"),
        ("tokens as a string", "tokens_generated", '"57"'),
        ("tokens as a float", "tokens_generated", "57.5"),
        ("exploration as a string", "exploration", '"true"'),
        ("naive timestamp", "ts", '"2024-05-01T12:00:00"'),
        ("empty request_id", "request_id", '""'),
    ]:
        made.append(
            Bad("inference-events", what, rid.encode(), _set(ev, field, literal), "validate")
        )

    rid = f"bad-{tag}-lb"
    _, label = make_request(rid, "badtenant")
    lb = label.to_bytes()
    made += _common("em-labels", rid, lb, "gold_answers")
    for what, field, literal in [
        ("verdict NaN", "verdict", "NaN"),
        ("verdict as a string", "verdict", '"yes"'),
        ("no gold answers", "gold_answers", "[]"),
        ("gold_answers and verdict both", "verdict", "true"),
        ("17 gold answers", "gold_answers", json.dumps(["a"] * 17)),
    ]:
        made.append(Bad("em-labels", what, rid.encode(), _set(lb, field, literal), "validate"))

    rid = f"bad-{tag}-fb"
    fb = UserFeedback(
        feedback_id=f"f-{rid}", request_id=rid, ts=datetime.now(UTC), kind="correction",
        rating=-1, correction="Lyon",
    ).to_bytes()  # fmt: skip
    made += _common("user-feedback", rid, fb, "correction")
    for what, field, literal in [
        ("rating NaN", "rating", "NaN"),
        ("rating infinite", "rating", "Infinity"),
        ("rating out of range", "rating", "7"),
        ("rating negative out of range", "rating", "-2"),
        ("unknown kind", "kind", '"stars"'),
    ]:
        made.append(Bad("user-feedback", what, rid.encode(), _set(fb, field, literal), "validate"))
    return made


def send(settings: Settings, records: list[Bad]) -> None:
    """Produce the records (lz4, so the 5 MB one fits the broker); note where each landed."""
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "compression.type": "lz4",
            "message.max.bytes": 16 * 1024 * 1024,
            "linger.ms": 0,
        }
    )
    errors: list[str] = []

    def report(bad: Bad) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(f"{bad.what}: {err}")
                return
            bad.partition, bad.offset = int(msg.partition() or 0), int(msg.offset() or 0)

        return done

    for bad in records:
        # A record without a key goes to a partition of the producer's choosing.
        producer.produce(
            settings.topic(bad.topic), value=bad.value, key=bad.key, on_delivery=report(bad)
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


@pytest.mark.slow
def test_a_corpus_of_malformed_input_is_dead_lettered_and_the_worker_goes_on(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = with_stream(isolated)
    tag = uuid.uuid4().hex[:8]
    bad = corpus(tag)
    assert {b.topic for b in bad} == {"inference-events", "em-labels", "user-feedback"}
    worker = WorkerProcess(settings, tmp_path / "worker.log", "w-malformed")
    with workers(worker):
        worker.wait_ready()
        send(settings, bad)
        time.sleep(3)  # long enough for the worker to reach every record
        # Known bug: the dead letter of the 5 MB record (7 MB encoded) is over the
        # worker producer's 1 MB limit, the agent crashes, and since the batch is
        # never acknowledged every restart crashes on it again (a poison pill).
        # Proposed fix: /tmp/h/fault-patches/dead-letter-size.diff.
        assert worker.alive(), f"hostile input crashed the worker\n{worker.output()}"

        # Then a valid request, each of its inputs repeated: one outcome, no dead letter.
        tenant = tenant_name()
        rid = f"ok-{tag}"
        event, label = make_request(rid, tenant)
        thumbs = feedback(rid)
        good = [("inference-events", event.to_bytes())] * 3 + [("em-labels", label.to_bytes())] * 2
        good += [("user-feedback", thumbs.to_bytes())] * 2
        send(settings, [Bad(topic, "valid", rid.encode(), value, "") for topic, value in good])

        sql = (
            "SELECT version, labeled, em, feedback_count FROM outcomes FINAL "
            "WHERE request_id = %(r)s"
        )
        eventually(
            lambda: query(settings, sql, r=rid) == [(3, True, True, 1)],
            90,
            "the valid request's outcome (v3, labeled, EM, one feedback)",
            worker.output,
        )
        eventually(
            lambda: worker.metrics().get("stream_dead_letters_total") == len(bad),
            60,
            f"{len(bad)} dead letters counted by the worker",
            lambda: f"{worker.metrics()}\n{worker.output()}",
        )
        in_clickhouse = (
            "SELECT uniqExact(source_topic, partition, offset) FROM dead_letters "
            "WHERE source_topic LIKE %(p)s"
        )
        eventually(
            lambda: (
                query(settings, in_clickhouse, p=settings.kafka.topic_prefix + "%") == [(len(bad),)]
            ),
            60,
            "every dead letter in ClickHouse",
        )
        assert worker.alive() and worker.health() == {
            "status": "ok", "state": "running", "sink_alive": True,
        }, worker.output()  # fmt: skip

    letters = {}
    for msg in read_topic(settings.kafka, "dead-letters"):
        letter = DeadLetter.from_bytes(msg.value() or b"")
        where = (letter.source_topic, letter.partition, letter.offset)
        assert where not in letters, f"dead-lettered twice: {where}"
        letters[where] = letter
    expected = {(settings.topic(b.topic), b.partition, b.offset): b for b in bad}
    assert set(letters) == set(expected), (
        f"missing: {[expected[w].what for w in set(expected) - set(letters)]}, "
        f"unexpected: {set(letters) - set(expected)}"
    )
    for where, letter in letters.items():
        case = expected[where]
        value = case.value or b""
        if len(value) > MAX_WHOLE:
            # Too big to travel whole on Kafka: its head, and the error says so.
            assert value.startswith(letter.raw) and len(letter.raw) >= 4096, case.what
            assert "truncated" in letter.error and str(len(value)) in letter.error
        else:
            assert letter.raw == value, f"{case.topic}: {case.what}: raw bytes differ"
            assert letter.key == case.key, f"{case.topic}: {case.what}: key differs"
        assert letter.error_kind == case.kind, f"{case.topic}: {case.what}: {letter.error}"
        assert letter.error.strip() and letter.worker_id == "w-malformed"

    prefix = f"bad-{tag}%"
    for table in ("outcomes", "trajectory_points", "inference_events", "user_feedback"):
        sql = f"SELECT count() FROM {table} WHERE request_id LIKE %(p)s"  # noqa: S608  # constant names
        found = query(settings, sql, p=prefix)
        assert found == [(0,)], f"{table} holds rows of malformed input"
    assert query(settings, "SELECT count() FROM outcomes WHERE request_id = %(r)s", r=rid) == [(1,)]


def test_the_corpus_covers_the_issue_and_each_record_breaks_its_contract() -> None:
    made = corpus("x")
    whats = {b.what for b in made}
    for needed in (
        "truncated JSON", "wrong type: request_id a number", "NaN confidence",
        "infinite confidence", "negative tokens", "a 5 MB string", "unknown schema_version 2",
        "binary garbage",
    ):  # fmt: skip
        assert needed in whats
    for b in made:
        record = InputRecord(b.topic, f"p.{b.topic}", 0, 0, b.key, b.value)  # type: ignore[arg-type]
        with pytest.raises(RejectedError) as caught:
            decode(record)
        assert caught.value.kind == b.kind, f"{b.topic}: {b.what}: {caught.value.error[:200]}"
