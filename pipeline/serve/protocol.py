"""The OpenAI-compatible wire format: requests in, responses and stream chunks out.

Only what a single-choice, text-only node can honour is accepted; unknown
fields are ignored (clients send many), wrongly typed ones are refused with
HTTP 400 and an OpenAI-style error body (:func:`error_body`).

The request's ``metadata`` object carries the segment and an optional
request id: ``{"tenant": "acme", "task": "qa", "request_id": "r-1"}``; other
keys are ignored. Responses add ``usage.probe_tokens`` (tokens spent on
confidence probes) and, beside OpenAI's ``finish_reason``, the choice's
``stop_reason`` (``confident``, ``budget`` or ``natural_end``).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.serve.engine import Generation, Sampling
from schemas import Id, StopReason
from schemas._types import SegmentPart

MAX_STOP_SEQUENCES = 4


class Metadata(BaseModel):
    """The segment of a request and, optionally, its id (the key of its label)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant: SegmentPart | None = None
    task: SegmentPart | None = None
    request_id: Id | None = None

    @field_validator("task")
    @classmethod
    def _not_global(cls, value: str | None) -> str | None:
        if value == "global":
            msg = "task 'global' is reserved for the fallback policy"
            raise ValueError(msg)
        return value


class ChatMessage(BaseModel):
    """One chat message (text content only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "user", "assistant", "developer"]
    content: str = Field(max_length=1_000_000)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    metadata: Metadata = Metadata()

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            msg = f"at most {MAX_STOP_SEQUENCES} stop sequences"
            raise ValueError(msg)
        return value

    def sampling(self, default_max_tokens: int) -> Sampling:
        """The sampling parameters of this request."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return Sampling(
            max_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed or 0,
            stop=tuple(s for s in stops if s),
        )


class ChatRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    def sampling(self, default_max_tokens: int) -> Sampling:
        """The sampling parameters; ``max_completion_tokens`` wins over ``max_tokens``."""
        base = super().sampling(default_max_tokens)
        if self.max_completion_tokens is None:
            return base
        return Sampling(
            max_tokens=self.max_completion_tokens,
            temperature=base.temperature,
            top_p=base.top_p,
            seed=base.seed,
            stop=base.stop,
        )


class CompletionRequest(_Request):
    """``POST /v1/completions`` (one prompt)."""

    prompt: str | list[str] = Field(max_length=1_000_000)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            msg = "exactly one prompt per request"
            raise ValueError(msg)
        return value

    def text(self) -> str:
        """The prompt text."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def finish_reason(stop_reason: StopReason) -> Literal["stop", "length"]:
    """OpenAI's ``finish_reason``: ``length`` when the budget ran out, else ``stop``."""
    return "length" if stop_reason == "budget" else "stop"


def usage(generation: Generation) -> dict[str, int]:
    """OpenAI's usage object plus ``probe_tokens`` (not in ``total_tokens``)."""
    return {
        "prompt_tokens": generation.tokens_prompt,
        "completion_tokens": generation.tokens_generated,
        "total_tokens": generation.tokens_prompt + generation.tokens_generated,
        "probe_tokens": generation.tokens_probe,
    }


def chat_response(response_id: str, model: str, generation: Generation) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "finish_reason": finish_reason(generation.stop_reason),
                "stop_reason": generation.stop_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(generation),
    }


def completion_response(response_id: str, model: str, generation: Generation) -> dict[str, Any]:
    """A ``text_completion`` object."""
    return {
        "id": response_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": generation.text,
                "finish_reason": finish_reason(generation.stop_reason),
                "stop_reason": generation.stop_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(generation),
    }


def stream_chunk(
    response_id: str,
    model: str,
    *,
    chat: bool,
    text: str = "",
    generation: Generation | None = None,
    first: bool = False,
) -> dict[str, Any]:
    """One SSE chunk: a text piece, or (with ``generation``) the last one with the reasons."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": None, "logprobs": None}
    if chat:
        choice["delta"] = {"role": "assistant", "content": text} if first else {"content": text}
    else:
        choice["text"] = text
    chunk: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if generation is not None:
        choice["finish_reason"] = finish_reason(generation.stop_reason)
        choice["stop_reason"] = generation.stop_reason
        chunk["usage"] = usage(generation)
    return chunk


def error_body(message: str, kind: str, *, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """A one-line message and the offending parameter, from pydantic's error list."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    where = f" at {param}" if param else ""
    return f"invalid request{where}: {first.get('msg', 'invalid value')}", param
