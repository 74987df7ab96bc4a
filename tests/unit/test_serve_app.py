"""The serving node's pure parts: request parsing, segments, events, the load signal, metrics."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.node.decision import RequestPlan, Rule
from pipeline.serve.config import ServeSettings, load_server_settings
from pipeline.serve.engine import Generation
from pipeline.serve.errors import QueueFullError
from pipeline.serve.events import build_event, segment_of
from pipeline.serve.metrics import ServeMetrics
from pipeline.serve.pool import SlotPool, occupancy
from pipeline.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    Metadata,
    chat_response,
    error_body,
    finish_reason,
    stream_chunk,
    validation_message,
)
from schemas import Checkpoint, InferenceEvent, Segment, StopReason

# -- requests --------------------------------------------------------------------------


def test_chat_request_reads_openai_fields_and_metadata() -> None:
    body = ChatRequest.model_validate_json(
        b'{"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,'
        b' "temperature": 0.5, "stop": "\\n", "stream": true, "user": "ignored",'
        b' "metadata": {"tenant": "acme", "task": "qa", "request_id": "r-1", "other": "x"}}'
    )
    assert body.stream is True
    assert body.metadata == Metadata(tenant="acme", task="qa", request_id="r-1")
    sampling = body.sampling(default_max_tokens=100)
    assert (sampling.max_tokens, sampling.temperature, sampling.stop) == (7, 0.5, ("\n",))


def test_max_completion_tokens_wins_and_the_default_applies_without_either() -> None:
    messages = [{"role": "user", "content": "hi"}]
    both = ChatRequest.model_validate(
        {"messages": messages, "max_tokens": 7, "max_completion_tokens": 3}
    )
    assert both.sampling(100).max_tokens == 3
    assert ChatRequest.model_validate({"messages": messages}).sampling(100).max_tokens == 100


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{bad json", None),
        (b'{"messages": "hi"}', "messages"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', "n"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "metadata": {"tenant": "a/b"}}',
            "metadata.tenant",
        ),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "metadata": {"task": "global"}}',
            "metadata.task",
        ),
    ],
)
def test_malformed_requests_are_refused_naming_the_parameter(raw: bytes, param: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatRequest.model_validate_json(raw)
    message, where = validation_message(list(caught.value.errors()))
    assert where == param
    assert message.startswith("invalid request")


def test_completion_request_takes_one_prompt() -> None:
    assert CompletionRequest.model_validate({"prompt": ["a b"]}).text() == "a b"
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"prompt": ["a", "b"]})


def test_error_body_has_the_openai_shape() -> None:
    assert error_body("no", "invalid_request_error", param="messages") == {
        "error": {
            "message": "no",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    }


# -- segments --------------------------------------------------------------------------


def test_segment_comes_from_metadata_else_defaults_and_length_from_tokens() -> None:
    given = segment_of(Metadata(tenant="acme", task="qa"), 10, tenant="d", task="chat")
    assert given == Segment(tenant="acme", task="qa", length_bucket="short")
    assert segment_of(Metadata(), 200, tenant="d", task="chat") == Segment(
        tenant="d", task="chat", length_bucket="medium"
    )
    assert segment_of(Metadata(task="sum"), 768, tenant="d", task="chat").key() == "d/sum/long"


# -- events ----------------------------------------------------------------------------

SEGMENT = Segment(tenant="acme", task="qa", length_bucket="short")
STOPPING = Rule(threshold=0.6, min_tokens=4, token_budget=64)
OFF = Rule(threshold=1.0, min_tokens=4, token_budget=64)
EXPLORE = Rule(threshold=1.0, min_tokens=0, token_budget=64, explore=True)


def plan(rule: Rule, *, exploration: bool = False, version: int = 3) -> RequestPlan:
    return RequestPlan(
        request_id="r-1",
        policy_name="default",
        policy_version=version,
        arm="production",
        exploration=exploration,
        load_mode="normal",
        segment_key="global",
        rule=rule,
    )


def generation(
    the_plan: RequestPlan,
    reason: StopReason,
    generated: int,
    *,
    budget: int = 32,
    confidence: float = 0.7,
    points: tuple[Checkpoint, ...] = (),
) -> Generation:
    return Generation(
        text="Paris",
        answer="Paris",
        tokens_prompt=37,
        tokens_generated=generated,
        tokens_probe=14,
        tokens_budget=budget,
        stop_reason=reason,
        confidence=confidence,
        threshold=the_plan.threshold_at(generated),
        trajectory=points,
        seconds=0.5,
    )


def event_of(the_plan: RequestPlan, gen: Generation) -> InferenceEvent:
    return build_event(
        request_id="r-1",
        node_id="node-1",
        model="smol",
        segment=SEGMENT,
        plan=the_plan,
        generation=gen,
        latency_ms=512.0,
        node_load=0.5,
    )


def test_confident_stop_reports_the_threshold_it_reached() -> None:
    the_plan = plan(STOPPING)
    event = event_of(the_plan, generation(the_plan, "confident", 8, confidence=0.7))
    assert (event.stop_reason, event.threshold, event.confidence) == ("confident", 0.6, 0.7)
    assert (event.tokens_generated, event.tokens_probe, event.policy_version) == (8, 14, 3)
    assert event.trajectory is None


def test_budget_stop_used_the_whole_budget() -> None:
    the_plan = plan(OFF)
    event = event_of(the_plan, generation(the_plan, "budget", 32, budget=32, confidence=0.2))
    assert (event.stop_reason, event.tokens_generated, event.tokens_budget) == ("budget", 32, 32)
    assert event.threshold == 1.0  # early stopping off, reported as 1.0


def test_natural_end_before_min_tokens_has_no_threshold() -> None:
    the_plan = plan(STOPPING)
    event = event_of(the_plan, generation(the_plan, "natural_end", 2, confidence=0.9))
    assert event.stop_reason == "natural_end"
    assert event.threshold is None


def test_exploration_event_has_no_threshold_and_its_trajectory() -> None:
    the_plan = plan(EXPLORE, exploration=True)
    points = (Checkpoint(tokens=8, confidence=0.3, answer="Lyon"),)
    gen = generation(the_plan, "natural_end", 12, confidence=0.8, points=points)
    event = event_of(the_plan, gen)
    assert event.exploration is True
    assert event.threshold is None
    assert event.trajectory == points


def test_a_generation_breaking_the_contract_is_refused() -> None:
    the_plan = plan(OFF)
    with pytest.raises(ValidationError, match="budget"):
        event_of(the_plan, generation(the_plan, "budget", 10, budget=32))


def test_served_trajectory_is_not_sent_and_load_is_clipped() -> None:
    the_plan = plan(STOPPING)
    points = (Checkpoint(tokens=8, confidence=0.3, answer="Lyon"),)
    gen = generation(the_plan, "natural_end", 12, points=points)
    event = build_event(
        request_id="r-2",
        node_id="n",
        model="m",
        segment=SEGMENT,
        plan=the_plan,
        generation=gen,
        latency_ms=-1.0,
        node_load=1.5,
    )
    assert (event.trajectory, event.node_load, event.latency_ms) == (None, 1.0, 0.0)


# -- responses -------------------------------------------------------------------------


def test_responses_carry_probe_tokens_and_our_stop_reason() -> None:
    the_plan = plan(STOPPING)
    body = chat_response("chatcmpl-1", "smol", generation(the_plan, "confident", 8))
    choice = body["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "confident")
    assert body["usage"] == {
        "prompt_tokens": 37,
        "completion_tokens": 8,
        "total_tokens": 45,
        "probe_tokens": 14,
    }
    assert finish_reason("budget") == "length"
    assert finish_reason("natural_end") == "stop"
    last = stream_chunk("c", "m", chat=True, generation=generation(the_plan, "budget", 32))
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["usage"]["probe_tokens"] == 14
    assert stream_chunk("c", "m", chat=True, first=True)["choices"][0]["delta"]["role"] == (
        "assistant"
    )


# -- the load signal -------------------------------------------------------------------


def test_occupancy_counts_busy_and_queued_over_slots_clipped() -> None:
    assert occupancy(0, 0, 2) == 0.0
    assert occupancy(1, 0, 2) == 0.5
    assert occupancy(2, 1, 2) == 1.0
    with pytest.raises(ValueError, match="slots"):
        occupancy(0, 0, 0)


def test_pool_reports_the_load_each_arrival_found_and_each_departure_left() -> None:
    seen: list[float] = []
    pool = SlotPool(["e1", "e2"], max_queue=1, on_load=seen.append)
    first, second, third = pool.admit(), pool.admit(), pool.admit()
    assert (first.load, second.load, third.load) == (0.0, 0.5, 1.0)
    assert first.take() is not None
    assert second.take() is not None
    assert (pool.busy, pool.queued, pool.load()) == (2, 1, 1.0)
    with pytest.raises(QueueFullError):
        pool.admit()
    assert third.take(timeout=0.05) is None  # still waiting: no free slot
    first.release()
    assert third.take(timeout=1.0) is not None
    second.release()
    third.release()
    third.release()  # idempotent
    assert (pool.busy, pool.queued) == (0, 0)
    assert seen == [0.0, 0.5, 1.0, 1.0, 0.5, 0.0]


def test_a_queued_request_gets_the_slot_a_finished_one_frees() -> None:
    pool = SlotPool(["only"], max_queue=1)
    holder = pool.admit()
    assert holder.take() == "only"
    waiter = pool.admit()
    got: list[str | None] = []
    thread = threading.Thread(target=lambda: got.append(waiter.take()))
    thread.start()
    time.sleep(0.05)
    assert got == []
    holder.release()
    thread.join(2)
    assert got == ["only"]
    waiter.release()
    assert pool.load() == 0.0


def test_leaving_the_queue_frees_the_place() -> None:
    pool = SlotPool(["only"], max_queue=0)
    with pool.admit() as lease:
        lease.take()
        with pytest.raises(QueueFullError):
            pool.admit()
    with pool.admit():  # never took the slot; leaving still frees its place
        pass
    assert (pool.busy, pool.queued) == (0, 0)


# -- settings and metrics --------------------------------------------------------------


def test_serve_settings_come_from_the_environment_and_options_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_SERVE__SLOTS", "3")
    monkeypatch.setenv("PIPELINE_SERVE__DEFAULT_TENANT", "acme")
    monkeypatch.setenv("PIPELINE_NODE__POLICY_NAME", "earlystop")
    settings = load_server_settings(port=9001, check_every=None)
    assert (settings.serve.slots, settings.serve.port, settings.serve.check_every) == (3, 9001, 8)
    assert settings.serve.default_tenant == "acme"
    assert settings.node.policy_name == "earlystop"
    assert ServeSettings(slots=2, threads_per_slot=None).threads() >= 1


def test_bad_serve_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SERVE__SLOTS", "0")
    with pytest.raises(ConfigError, match="PIPELINE_SERVE__SLOTS"):
        load_server_settings()
    monkeypatch.delenv("PIPELINE_SERVE__SLOTS")
    with pytest.raises(ConfigError, match="PIPELINE_SERVE__CHECK_EVERY"):
        load_server_settings(check_every=0)


def test_metrics_render_only_the_serving_node_series() -> None:
    metrics = ServeMetrics()
    metrics.inc("serve_requests_total", stop_reason="confident", exploration="false")
    metrics.set_load_mode("peak")
    text = metrics.render()
    assert "# TYPE serve_requests_total counter" in text
    assert 'serve_requests_total{exploration="false",stop_reason="confident"} 1' in text
    assert 'serve_load_mode{mode="peak"} 1' in text
    assert 'serve_load_mode{mode="normal"} 0' in text
    assert "stream_" not in text and "sink_" not in text
