"""The HTTP API: OpenAI-compatible completions, health and metrics, over a :class:`NodeServer`.

- ``POST /v1/chat/completions``, ``POST /v1/completions``: OpenAI request and
  response shapes (:mod:`pipeline.serve.protocol`); ``stream: true`` answers
  with server-sent events (``data: {...}`` chunks, then ``data: [DONE]``).
- ``GET /v1/models``: the one model this node serves.
- ``GET /health``: policy name, version and source, load mode, busy slots,
  queue, the control subscriber's status.
- ``GET /metrics``: Prometheus text (:mod:`pipeline.serve.metrics`).

Errors are OpenAI-style JSON bodies: 400 for a malformed body, wrong fields
or a prompt over the context window, 503 when the queue is full. Generation
runs in a worker thread per request (engines block); the event loop only
parses, queues and streams. A streaming client that disconnects sets the
request's cancel flag: the generation stops at its next token, the slot is
freed and no event is sent.

The app's lifespan starts the node (policy from the control topic, else
from disk, else the safe default) and closes it, with the emitter, on
shutdown.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from pipeline.serve.errors import GenerationCancelled, PromptTooLongError, QueueFullError
from pipeline.serve.events import segment_of
from pipeline.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    chat_response,
    completion_response,
    error_body,
    stream_chunk,
    validation_message,
)
from pipeline.serve.service import Job, NodeServer

R = TypeVar("R", bound=BaseModel)


class BadRequestError(Exception):
    """The request cannot be served as sent (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param=param), status_code=status)


async def _parse(request: Request, model: type[R]) -> R:
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
        raise BadRequestError(message, param) from None


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def create_app(server: NodeServer) -> FastAPI:
    """The FastAPI app over ``server`` (its engines loaded; the node starts with the app)."""
    serve = server.settings.serve
    executor = ThreadPoolExecutor(
        max_workers=serve.slots + serve.max_queue + 1, thread_name_prefix="serve-slot"
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(server.start)
        try:
            yield
        finally:
            executor.shutdown(wait=True, cancel_futures=False)
            await anyio.to_thread.run_sync(server.close)

    app = FastAPI(title="earlystop inference node", lifespan=lifespan)

    @app.exception_handler(BadRequestError)
    async def _bad_request(_: Request, exc: BadRequestError) -> JSONResponse:
        server.metrics.inc("serve_requests_failed_total", reason="bad_request")
        return _error(400, str(exc), "invalid_request_error", exc.param)

    @app.exception_handler(PromptTooLongError)
    async def _too_long(_: Request, exc: PromptTooLongError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error", "messages")

    @app.exception_handler(QueueFullError)
    async def _full(_: Request, exc: QueueFullError) -> JSONResponse:
        return _error(503, str(exc), "server_overloaded")

    async def serve_request(
        body: ChatRequest | CompletionRequest,
        prepare: Callable[[], list[int]],
        *,
        chat: bool,
    ) -> Response:
        prompt = await anyio.to_thread.run_sync(prepare)
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        segment = segment_of(
            body.metadata, len(prompt), tenant=serve.default_tenant, task=serve.default_task
        )
        lease = server.admit()
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        job = Job(
            request_id=body.metadata.request_id or response_id,
            prompt=prompt,
            segment=segment,
            sampling=body.sampling(serve.max_tokens),
            arrived=time.perf_counter(),
            on_text=on_text if body.stream else None,
            cancelled=cancel.is_set,
        )
        future = loop.run_in_executor(executor, server.run, lease, job)
        if not body.stream:
            generation = await future
            shape = chat_response if chat else completion_response
            return JSONResponse(shape(response_id, server.model, generation))
        # Text pieces are queued before the future completes (both go through the loop).
        future.add_done_callback(lambda _: pieces.put_nowait(None))
        return StreamingResponse(
            _stream(response_id, server.model, chat, pieces, future, cancel),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _parse(request, ChatRequest)
        messages = [m.model_dump() for m in body.messages]
        return await serve_request(body, lambda: server.chat_prompt(messages), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await _parse(request, CompletionRequest)
        text = body.text()
        return await serve_request(body, lambda: server.text_prompt(text), chat=False)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": server.model, "object": "model", "created": 0, "owned_by": "node"}],
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        server.refresh_gauges()
        return PlainTextResponse(
            server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app


async def _stream(
    response_id: str,
    model: str,
    chat: bool,
    pieces: asyncio.Queue[str | None],
    future: Awaitable[Any],
    cancel: threading.Event,
) -> AsyncIterator[str]:
    """SSE chunks of one request; leaving early (the client went away) cancels it."""
    try:
        yield _sse(stream_chunk(response_id, model, chat=chat, first=True))
        while (piece := await pieces.get()) is not None:
            yield _sse(stream_chunk(response_id, model, chat=chat, text=piece))
        try:
            generation = await future
        except GenerationCancelled:
            return
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band
            yield _sse(error_body(f"generation failed: {exc}", "server_error"))
            return
        yield _sse(stream_chunk(response_id, model, chat=chat, generation=generation))
        yield _sse("[DONE]")
    finally:
        cancel.set()  # a no-op after the end; stops a generation whose client left
