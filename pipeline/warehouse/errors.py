"""Errors of the warehouse package, under the pipeline's one exception tree.

- StackError
    - WarehouseOwnedError: the chdb data path is held by another process.
- WarehouseError
    - WarehouseUnreachableError: no ClickHouse answers at the configured URL.
    - MigrationError: a migration file is invalid, failed, or was edited after it ran.
"""

from __future__ import annotations

from pipeline.errors import StackError, WarehouseError


class WarehouseOwnedError(StackError):
    """The chdb path is open in another process: stop that process or use another state folder."""


class WarehouseUnreachableError(WarehouseError):
    """Nothing answers at PIPELINE_CLICKHOUSE__URL: run `pipeline up`, or fix the URL."""


class MigrationError(WarehouseError):
    """A migration is invalid or failed: fix the named file, never edit one that already ran."""
