"""The `pipeline` command line. Only the CLI wires settings, clients and services."""

from pipeline.cli._app import main

__all__ = ["main"]
