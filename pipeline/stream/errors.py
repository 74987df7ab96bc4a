"""Errors of the stream worker, under the pipeline's one exception tree.

- StackError
    - TopicsError: an input topic is missing, or the inputs are not co-partitioned.
- WarehouseError
    - SinkError: the sink met a row ClickHouse will never accept.
- PipelineError
    - WorkerCrashedError: an agent, the sweeper or the sink failed; the worker stopped.
    - JoinStateError: a join state in the table cannot be read back.
"""

from __future__ import annotations

from pipeline.errors import PipelineError, StackError, WarehouseError


class TopicsError(StackError):
    """Input topics are missing or differ in partition count: fix them, then start again."""


class SinkError(WarehouseError):
    """A batch ClickHouse refuses for its content: fix the mapping or the schema, then replay."""


class WorkerCrashedError(PipelineError):
    """A part of the worker failed and the worker stopped: read the cause, fix it, restart."""


class JoinStateError(PipelineError):
    """A stored join state cannot be read: a bug or an incompatible upgrade.

    The worker stops rather than guess. Fix the reader, or delete the app's
    changelog topic and consumer group to rebuild the state from the inputs.
    """
