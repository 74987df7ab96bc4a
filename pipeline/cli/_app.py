"""The root command and its error handling: one clear line, non-zero exit."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

from pipeline.errors import PipelineError
from pipeline.logrepeat import quiet_repeats

app = typer.Typer(
    name="pipeline",
    help="Closed-loop early-stopping control plane: stack, stream, optimizer, fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def _register() -> None:
    # Commands live in small modules; importing them registers them on `app`.
    from pipeline.cli import (  # noqa: F401
        calibrate,
        capture,
        demo,
        fleet,
        keys,
        optimize,
        policy,
        reviewers,
        serve,
        sim,
        smoke,
        stack,
        stream,
        warehouse,
    )


def main() -> None:
    """Entry point of the `pipeline` console script."""
    _register()
    # PIPELINE_LOG_LEVEL=INFO (or DEBUG) shows the libraries' own logs too: Faust's
    # rebalances, seeks and commits, aiokafka's group membership.
    level = os.environ.get("PIPELINE_LOG_LEVEL", "WARNING").upper()
    if level not in logging.getLevelNamesMapping():
        err_console.print(f"error: PIPELINE_LOG_LEVEL={level!r} is not a log level (try INFO)")
        sys.exit(2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # A library that retries a lost connection logs each attempt: one line per kind
    # per 30 s, with the count of the rest (aiokafka: thousands a second per worker).
    quiet_repeats()
    # Its connection errors are turned into one clear line by the warehouse client.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        # Without standalone mode click returns (not raises) the code of typer.Exit.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PipelineError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors: typer bundles its own click, so match the exception by
        # its interface rather than by click.ClickException.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
