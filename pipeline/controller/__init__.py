"""The controller service: optimize cycles, the publisher thread and the canary monitor.

The I/O around the pure optimizer: it reads ClickHouse, runs
:func:`pipeline.optimizer.optimize`, and hands the proposal to the registry.

- :mod:`.config`: ``ControllerSettings`` (spec path, periods, window).
- :mod:`.reader`: exploration batches and paired canary observations from ClickHouse.
- :mod:`.handover`: the optimizer's proposal as the registry's draft (pure).
- :mod:`.plan`: pure decisions (may a cycle register, where a proposal goes).
- :mod:`.cycle`: one optimize cycle (ClickHouse -> optimizer -> MLflow).
- :mod:`.monitor`: the guardrail monitor of a running canary (ClickHouse -> verdict -> MLflow).
- :mod:`.loop`: :class:`~pipeline.controller.loop.ControlLoop`, the long-running
  ``pipeline controller``.

Canary moves in the registry are :mod:`pipeline.registry.canary`; see
docs/adr-003-canary.md for how a canary starts and ends.
"""
