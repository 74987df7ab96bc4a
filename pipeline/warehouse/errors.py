"""Errors of ClickHouse access, under the pipeline's one exception tree.

- WarehouseError
    - WarehouseUnreachableError: no ClickHouse answers at the configured URL.
    - MigrationError: a migration file is invalid, failed, or was edited after it ran.
"""

from __future__ import annotations

from pipeline.errors import WarehouseError


class WarehouseUnreachableError(WarehouseError):
    """Nothing answers at PIPELINE_CLICKHOUSE__URL: run `pipeline up`, or fix the URL."""


class MigrationError(WarehouseError):
    """A migration is invalid or failed: fix the named file, never edit one that already ran."""
