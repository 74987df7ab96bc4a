"""`pipeline serve` for real: llama.cpp, SmolLM2, the node SDK, Kafka, the worker, ClickHouse.

Each test starts its own serving node in-process (``_serve.serving``) on the
test's isolated topics; requests go through the ``openai`` client or plain
HTTP. Generations are kept short (a few dozen tokens at most).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from pipeline.config import Settings
from pipeline.stream.config import StreamSettings
from schemas import EMLabel
from tests.integration._control import acks_matching
from tests.integration._serve import (
    chat,
    events,
    policy,
    publish_policy,
    request_ids,
    server_settings,
    serving,
)
from tests.integration._stream import label_producer, start_worker
from tests.integration.support import eventually, http_get, parse_metrics, query, run_cli

pytestmark = pytest.mark.integration

FAST = StreamSettings(
    join_window_s=4.0,
    sweep_interval_s=0.5,
    commit_interval_s=0.5,
    sink_batch_max_s=0.3,
    sink_retry_initial_s=0.05,
    shutdown_timeout_s=20.0,
)


def _label(settings: Settings, rids: list[str]) -> None:
    producer = label_producer(settings)
    for rid in rids:
        label = EMLabel(
            label_id=f"l-{rid}",
            request_id=rid,
            labeler_id="ann",
            ts=datetime.now(UTC),
            gold_answers=("Paris",),
        )
        producer.produce(settings.topic("em-labels"), key=rid.encode(), value=label.to_bytes())
    assert producer.flush(30) == 0


def _rows(settings: Settings, sql: str, ids: list[str], count: int) -> list[tuple[Any, ...]]:
    found = query(settings, sql, ids=ids)
    return found if len(found) == count else []


@pytest.mark.slow
def test_openai_client_requests_land_in_clickhouse_with_real_token_counts(
    isolated: Settings, tmp_path: Path
) -> None:
    publish_policy(isolated, policy({"normal": 0.999}, exploration=0.2), 1)
    tag = uuid.uuid4().hex[:6]
    explore = request_ids(f"x{tag}", 2, explore=True)
    served = request_ids(f"s{tag}", 3, explore=False)
    worker = start_worker(isolated, FAST)
    usage: dict[str, tuple[int, int, int]] = {}
    try:
        with serving(server_settings(isolated, tmp_path, "node-a")) as node:
            assert node.server.node.subscriber.status().version == 1
            client = node.client()
            texts = {}
            for rid in [*explore, served[0]]:
                reply = chat(client, rid)
                assert reply.choices[0].message.content
                assert reply.model == node.server.model
                extra = reply.usage.model_extra or {}
                usage[rid] = (
                    reply.usage.prompt_tokens,
                    reply.usage.completion_tokens,
                    int(extra["probe_tokens"]),
                )
                texts[rid] = reply.choices[0].message.content
            for rid in served[1:]:
                stream = chat(client, rid, stream=True, stream_options={"include_usage": True})
                pieces, last = [], None
                for chunk in stream:
                    pieces += [c.delta.content or "" for c in chunk.choices]
                    last = chunk
                assert last is not None and last.usage is not None
                extra = last.usage.model_extra or {}
                usage[rid] = (
                    last.usage.prompt_tokens,
                    last.usage.completion_tokens,
                    int(extra["probe_tokens"]),
                )
                texts[rid] = "".join(pieces)
            # Greedy decoding: streamed or not, the same question gets the same text.
            assert texts[served[1]] == texts[served[0]] == texts[served[2]]
        _label(isolated, [*explore, *served])
        ids = [*explore, *served]
        sql = (
            "SELECT request_id, tokens_prompt, tokens_generated, exploration, policy_version, "
            "node_id FROM inference_events FINAL WHERE request_id IN %(ids)s"
        )
        rows = eventually(lambda: _rows(isolated, sql, ids, 5), what="five events in ClickHouse")
        for rid, prompt, generated, exploration, version, node_id in rows:
            assert (prompt, generated) == usage[rid][:2]
            assert prompt > 0 and generated > 0
            assert exploration == (rid in explore)
            assert (version, node_id) == (1, "node-a")
        sent = events(isolated, set(ids))
        for rid in ids:
            assert sent[rid].tokens_probe == usage[rid][2]
        points_sql = (
            "SELECT request_id, count(), max(tokens) FROM trajectory_points FINAL "
            "WHERE request_id IN %(ids)s GROUP BY request_id"
        )
        points = eventually(
            lambda: _rows(isolated, points_sql, explore, 2),
            what="the exploration trajectories in ClickHouse",
        )
        for rid, count, top in points:
            trajectory = sent[rid].trajectory
            assert trajectory is not None
            assert count == len(trajectory) >= 1
            assert top == trajectory[-1].tokens <= sent[rid].tokens_generated
        assert query(isolated, points_sql, ids=served) == []
    finally:
        worker.halt()
    assert worker.errors == []


def test_early_stopping_policy_generates_fewer_tokens_than_the_safe_default(
    isolated: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    [full_id, early_id] = request_ids(f"c{tag}", 2, explore=False)
    settings = server_settings(isolated, tmp_path, "node-c")
    with serving(settings) as node:
        client = node.client()
        full = chat(client, full_id, max_tokens=24)
        assert node.server.controller.snapshot.version == 0  # the safe default
        publish_policy(isolated, policy({"normal": 0.05, "offpeak": 0.05}, min_tokens=4), 1)
        assert node.server.node.subscriber.wait_for_version(1, 30)
        early = chat(client, early_id, max_tokens=24)
    full_extra = full.choices[0].model_extra or {}
    early_extra = early.choices[0].model_extra or {}
    assert full_extra["stop_reason"] != "confident"
    assert (full.usage.model_extra or {})["probe_tokens"] == 0  # no probes under the default
    assert early_extra["stop_reason"] == "confident"
    assert early.usage.completion_tokens < full.usage.completion_tokens
    assert early.usage.prompt_tokens == full.usage.prompt_tokens
    sent = events(isolated, {full_id, early_id})
    assert sent[full_id].policy_version == 0 and sent[full_id].tokens_probe == 0
    assert sent[early_id].policy_version == 1 and sent[early_id].stop_reason == "confident"
    assert sent[early_id].tokens_generated == early.usage.completion_tokens
    assert sent[early_id].confidence >= (sent[early_id].threshold or 1.0)


def test_control_update_applies_between_requests_never_within_one(
    isolated: Settings, tmp_path: Path
) -> None:
    publish_policy(isolated, policy({"normal": 1.0}), 1)
    tag = uuid.uuid4().hex[:6]
    [inflight_id, next_id] = request_ids(f"d{tag}", 2, explore=False)
    with serving(server_settings(isolated, tmp_path, "node-d", max_tokens=256)) as node:
        assert node.server.controller.snapshot.version == 1
        body = {
            "prompt": "Once upon a time, in a faraway kingdom,",
            "max_tokens": 320,
            "stream": True,
            "metadata": {"request_id": inflight_id},
        }
        with httpx.stream("POST", f"{node.base_url}/v1/completions", json=body, timeout=120) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")  # the request has begun: its plan is fixed
            publish_policy(isolated, policy({"normal": 0.99}), 2)
            assert node.server.node.subscriber.wait_for_version(2, 30)
            busy_at_apply = node.server.pool.busy
            rest = [line for line in lines if line]
        assert busy_at_apply == 1, "the request finished before the update was applied"
        assert rest[-1] == "data: [DONE]"
        chat(node.client(), next_id)
    acks = acks_matching(
        isolated.kafka, lambda a: a.node_id == "node-d" and a.status == "applied", 2
    )
    assert sorted(a.version for a in acks) == [1, 2]
    sent = events(isolated, {inflight_id, next_id})
    assert sent[inflight_id].policy_version == 1
    assert sent[inflight_id].threshold == 1.0
    assert sent[next_id].policy_version == 2
    assert sent[next_id].threshold == 0.99


def test_requests_beyond_the_slots_run_at_peak_and_an_idle_node_runs_offpeak(
    isolated: Settings, tmp_path: Path
) -> None:
    publish_policy(isolated, policy({"offpeak": 0.99, "normal": 0.98, "peak": 0.97}), 1)
    tag = uuid.uuid4().hex[:6]
    ids = request_ids(f"e{tag}", 6, explore=False)
    with serving(server_settings(isolated, tmp_path, "node-e", slots=2, max_queue=4)) as node:
        client = node.client()
        modes: set[str] = set()
        threads = [threading.Thread(target=chat, args=(client, rid)) for rid in ids[:4]]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            modes.add(json.loads(http_get(node.port, "/health")[1])["load"]["mode"])
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        assert "peak" in modes
        health = json.loads(http_get(node.port, "/health")[1])
        assert health["load"] == {"mode": "offpeak", "value": 0.0}
        assert health["slots"] == {"total": 2, "busy": 0}
        chat(client, ids[4])
        metrics = parse_metrics(http_get(node.port, "/metrics")[1])
    burst = events(isolated, set(ids[:4]))
    assert len(burst) == 4
    seen = sorted((e.node_load, e.threshold) for e in burst.values())
    at_peak = [e for e in burst.values() if e.threshold == 0.97]
    assert at_peak, seen
    # An arrival that found both slots busy saw load 1.0 and switched the node to peak.
    assert max(e.node_load for e in at_peak) == 1.0, seen
    assert seen[0][0] == 0.0  # the first arrival found the node idle
    idle = events(isolated, {ids[4]})[ids[4]]
    assert (idle.node_load, idle.threshold) == (0.0, 0.99)
    assert metrics['serve_requests_total{exploration="false",stop_reason="budget"}'] >= 1
    assert metrics["serve_requests_total"] == 5
    assert metrics['serve_load_mode{mode="offpeak"}'] == 1
    assert metrics['serve_policy_version{policy="default"}'] == 1


def test_bad_requests_get_400_and_the_server_keeps_serving(
    isolated: Settings, tmp_path: Path
) -> None:
    with serving(server_settings(isolated, tmp_path, "node-f", n_ctx=256)) as node:
        url = f"{node.base_url}/v1/chat/completions"
        broken = httpx.post(url, content=b'{"messages": [', timeout=30)
        assert broken.status_code == 400
        assert broken.json()["error"]["type"] == "invalid_request_error"
        wrong = httpx.post(url, json={"messages": [{"role": "user", "content": 3}]}, timeout=30)
        assert wrong.status_code == 400
        assert wrong.json()["error"]["param"] == "messages.0.content"
        long_prompt = " ".join(["word"] * 400)
        too_long = httpx.post(
            url, json={"messages": [{"role": "user", "content": long_prompt}]}, timeout=30
        )
        assert too_long.status_code == 400
        assert "context window" in too_long.json()["error"]["message"]
        fine = chat(node.client(), f"f-{uuid.uuid4().hex[:6]}", max_tokens=4)
        assert fine.usage.completion_tokens >= 1
        models = node.client().models.list()
        assert [m.id for m in models.data] == [node.server.model]


def test_a_full_node_refuses_and_a_client_leaving_mid_stream_frees_the_slot(
    isolated: Settings, tmp_path: Path
) -> None:
    rid = f"g-{uuid.uuid4().hex[:6]}"
    settings = server_settings(isolated, tmp_path, "node-g", max_tokens=2000, slots=1, max_queue=0)
    with serving(settings) as node:
        body = {
            "prompt": "Once upon a time, in a faraway kingdom,",
            "max_tokens": 1500,
            "stream": True,
            "metadata": {"request_id": rid},
        }
        with httpx.stream("POST", f"{node.base_url}/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            for _ in range(4):
                next(lines)
            assert node.server.pool.busy == 1
            # The one slot is busy and no request may wait: the next one is refused.
            refused = httpx.post(
                f"{node.base_url}/v1/completions",
                json={"prompt": "Hi", "max_tokens": 2},
                timeout=30,
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "server_overloaded"
        left = time.monotonic()
        eventually(lambda: node.server.pool.busy == 0, timeout_s=20, what="the slot to be freed")
        assert time.monotonic() - left < 15  # 1500 tokens would take far longer
        metrics = parse_metrics(http_get(node.port, "/metrics")[1])
        assert metrics['serve_requests_failed_total{reason="cancelled"}'] == 1
        assert metrics['serve_requests_failed_total{reason="queue_full"}'] == 1
        after = chat(node.client(), f"{rid}-next", max_tokens=4)
        assert after.usage.completion_tokens >= 1
    assert rid not in events(isolated, {rid, f"{rid}-next"})


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_serve_with_a_bad_model_stops_with_one_line(
    stack: Settings, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "model.gguf"
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    result = run_cli(stack, "serve", "--model", str(path), timeout=120)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "model.gguf" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
