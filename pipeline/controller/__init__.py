"""The controller: optimize cycles, the publisher and the canary guardrail monitor.

- :mod:`~pipeline.controller.config`: ``ControllerSettings`` (spec path, periods, window).
- :mod:`~pipeline.controller.plan`: pure decisions (skip, canary body, monitor action).
- :mod:`~pipeline.controller.cycle`: one optimize cycle (ClickHouse -> optimizer -> MLflow).
- :mod:`~pipeline.registry.canary`: start, promote and roll back a canary in MLflow.
- :mod:`~pipeline.controller.loop`: the long-running ``pipeline controller``.

See docs/adr-003-canary.md for how a canary starts and ends.
"""
