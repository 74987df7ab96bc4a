"""`pipeline serve`: a reference inference node on llama.cpp with an OpenAI-compatible API."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from pipeline.cli._app import app, console

MODEL = typer.Option(
    None, "--model", help="A GGUF model file (default: the packaged SmolLM2-135M-Instruct)."
)


@app.command("serve")
def serve_command(
    model: Path | None = MODEL,
    host: str | None = typer.Option(None, "--host", help="Listen address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Listen port (default 8000)."),
    slots: int | None = typer.Option(
        None, "--slots", help="Concurrent generation slots (default 2)."
    ),
    n_ctx: int | None = typer.Option(
        None, "--n-ctx", help="Context window per slot in tokens (default 2048)."
    ),
    check_every: int | None = typer.Option(
        None, "--check-every", help="Tokens between confidence checkpoints (default 8)."
    ),
) -> None:
    """Serve /v1/chat/completions and /v1/completions under the live early-stopping policy."""
    import uvicorn  # noqa: PLC0415 - the llm extra; loaded only by this command

    from pipeline.serve.app import create_app  # noqa: PLC0415
    from pipeline.serve.config import load_server_settings  # noqa: PLC0415
    from pipeline.serve.service import NodeServer  # noqa: PLC0415

    settings = load_server_settings(
        model=model, host=host, port=port, slots=slots, n_ctx=n_ctx, check_every=check_every
    )
    serve = settings.serve
    server = NodeServer(settings)  # loads the model: a bad file stops here, with one line
    logging.getLogger("pipeline.serve").setLevel(logging.INFO)
    console.print(
        f"serving {server.model} on http://{serve.host}:{serve.port} with {serve.slots} slots "
        f"(policy {settings.node.policy_name}, node {settings.node.node_id}); Ctrl-C stops it"
    )
    uvicorn.run(create_app(server), host=serve.host, port=serve.port, log_level="warning")
