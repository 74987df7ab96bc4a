"""`pipeline demo`: the whole closed loop on the embedded stack, watched live.

:func:`~pipeline.demo.run.run_demo` starts the worker and the controller as
child processes, runs a simulated fleet in-process (standard segments, one
drifting midway), samples ClickHouse, the ack topic and MLflow while it runs,
stops everything it started, and writes a report under the state folder.
"""

from pipeline.demo.config import DemoConfig
from pipeline.demo.run import DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "run_demo"]
