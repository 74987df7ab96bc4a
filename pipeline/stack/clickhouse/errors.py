"""Errors of the embedded ClickHouse server, under the pipeline's one exception tree.

- StackError (pipeline.errors)
    - WarehouseOwnedError: the chdb data path is held by another process.
"""

from __future__ import annotations

from pipeline.errors import StackError


class WarehouseOwnedError(StackError):
    """The chdb path is open in another process: stop that process or use another state folder."""
