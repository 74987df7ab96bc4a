"""Run the demo: stack, worker, controller, fleet; watch; stop all; report.

Whatever happens (an error, Ctrl-C, SIGTERM turned into KeyboardInterrupt by
the CLI), the fleet is stopped and every child is sent SIGTERM, waited for
and killed if it lingers, before :func:`run_demo` returns or raises.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings, settings_env, with_stored_secrets
from pipeline.demo import observe
from pipeline.demo.config import NODE_EXPLORATION_CAP, DemoConfig, run_dir, signing_key, write_spec
from pipeline.demo.fleet import Fleet, demo_scenario
from pipeline.demo.history import seed_certificates
from pipeline.demo.procs import Children, DemoError, tail
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.demo.acceptance import Figure


@dataclass(frozen=True, slots=True)
class Sample:
    """One live sample of the run."""

    t: float
    requests: int
    exploration: int
    tokens_generated: int
    tokens_full: int
    production: int | None
    acked: dict[str, int]
    canary: str
    segments: tuple[observe.SegmentRow, ...]
    events_in_clickhouse: int | None


@dataclass
class DemoResult:
    """Everything a run measured; the report and the summary are made from it."""

    config: DemoConfig
    folder: Path
    samples: list[Sample] = field(default_factory=list)
    em: list[observe.EmBucket] = field(default_factory=list)
    registry: observe.Registry = observe.Registry()
    acked: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    events_in_clickhouse: int = 0
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    child_pids: dict[str, int] = field(default_factory=dict)
    stack_started: list[str] = field(default_factory=list)
    report: Path | None = None
    interrupted: bool = False
    started_at: datetime | None = None
    """Wall-clock time of the fleet's start (sample ``t`` counts from it)."""
    drift_at: datetime | None = None
    figures: list[Figure] = field(default_factory=list)


def run_settings(settings: Settings, config: DemoConfig) -> Settings:
    """The settings of one run: its own topics and worker group, the same services.

    Topics are prefixed with the run id, so a run never reads a backlog left by
    earlier runs or other traffic (the worker would chew through it first and
    the controller would see no samples for minutes), and the worker's Faust
    app id is the run's, so no committed offsets or table state carry over.
    """
    kafka = settings.kafka.model_copy(
        update={"topic_prefix": f"{settings.kafka.topic_prefix}{config.run_id}."}
    )
    stream = settings.stream.model_copy(
        update={"app_id": f"{settings.stream.app_id}-{config.run_id}"}
    )
    return settings.model_copy(update={"kafka": kafka, "stream": stream})


def ensure_stack(settings: Settings, on_line: Callable[[str], None]) -> list[str]:
    """Use the running stack, or start it; the services this call started."""
    from pipeline.stack import manager
    from pipeline.stack.topics import ensure_topics

    if all(s.up for s in manager.status(settings)):
        ensure_topics(settings)
        return []
    report = manager.up(settings, on_event=on_line)
    return [name for name, what in report.items() if what.startswith("started")]


def child_env(
    settings: Settings, config: DemoConfig, spec: Path, key: tuple[str, str]
) -> dict[str, str]:
    """The environment of the worker and the controller."""
    env = {**os.environ, **settings_env(settings)}
    env.update({
        "PIPELINE_CONTROL__ALGORITHM": "hmac-sha256",
        "PIPELINE_CONTROL__SIGNING_KEY_ID": key[0],
        "PIPELINE_CONTROL__SIGNING_KEY": key[1],
        "PIPELINE_CONTROL__POLICIES": config.policy_name,
        "PIPELINE_CONTROL__POLL_INTERVAL_S": "1",
        "PIPELINE_CONTROLLER__SPEC_PATH": str(spec),
        "PIPELINE_CONTROLLER__PERIOD_S": f"{config.period:g}",
        "PIPELINE_CONTROLLER__WINDOW_S": f"{config.window:g}",
        "PIPELINE_CONTROLLER__MONITOR_INTERVAL_S": "5",
        # Labels arrive within seconds in the simulator; production waits longer.
        "PIPELINE_CONTROLLER__LABEL_WAIT_S": "15",
        # The nodes' cap the controller checks proposals against, as the demo's nodes have it.
        "PIPELINE_NODE__MAX_EXPLORATION_SHARE": f"{NODE_EXPLORATION_CAP:g}",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
    })  # fmt: skip
    return env


def _wait_for_line(children: Children, log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children.check()
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    msg = f"no {text!r} in {log} after {timeout_s:g}s:\n{tail(log)}"
    raise DemoError(msg)


def _sample(settings: Settings, config: DemoConfig, fleet: Fleet, acks: observe.AckWatcher,
            t0: float, ch: Any) -> Sample:  # fmt: skip
    s = fleet.snapshot()
    try:
        reg = observe.registry(settings, config.policy_name)
    except PipelineError:
        reg = observe.Registry(canary="MLflow not answering")
    try:
        segs = tuple(observe.segments(ch, config.policy_name))
        events: int | None = sum(r.events for r in segs)
    except Exception:  # noqa: BLE001  # a slow warehouse only blanks one refresh
        segs, events = (), None
    return Sample(round(time.monotonic() - t0, 1), s.requests, s.exploration,
                  s.tokens_generated, s.tokens_full, reg.production, acks.versions(),
                  reg.canary, segs, events)  # fmt: skip


def run_demo(
    settings: Settings,
    config: DemoConfig,
    *,
    on_line: Callable[[str], None] = lambda _: None,
    on_sample: Callable[[Sample], None] = lambda _: None,
) -> DemoResult:
    """Run one demo (see the module docstring); the result, its report written.

    Raises:
        DemoError: a child exited early or the fleet failed.
        PipelineError: a service of the stack is missing and cannot start.
    """
    from pipeline.demo.acceptance import figures
    from pipeline.demo.report import write_report
    from pipeline.warehouse.client import connect

    folder = run_dir(settings, config)
    result = DemoResult(config, folder)
    settings = run_settings(settings, config)
    result.stack_started = ensure_stack(settings, on_line)
    # `pipeline up` may have generated the MLflow login just now: read it for this
    # process's own registry reads (children load it themselves, never from our env).
    reader = with_stored_secrets(settings)
    spec = write_spec(settings, config, folder)
    if config.history and config.trace is None:
        seeded = seed_certificates(settings.state_dir, spec, demo_scenario(config), config.seed,
                                   config.history, datetime.now(UTC))  # fmt: skip
        on_line(f"history: {seeded.samples} simulated exploration samples (another seed) fed "
                f"to the certificates; {seeded.certified} populations certified")  # fmt: skip
    key = signing_key()
    env = child_env(settings, config, spec, key)
    acks = observe.AckWatcher(settings, config.policy_name)
    fleet = Fleet(settings, config, *key)
    children = Children(env, folder / "logs")
    ch = connect(settings)
    try:
        with children:
            worker = children.start("worker", "worker", "--progress-every", "15")
            on_line(f"worker started (pid {worker.pid}), log {worker.log}")
            _wait_for_line(children, worker.log, "worker running", 120)
            ctl = children.start("controller", "controller")
            on_line(f"controller started (pid {ctl.pid}): cycle every {config.period:g}s, "
                    f"window {config.window:g}s, log {ctl.log}")  # fmt: skip
            acks.start()
            t0 = time.monotonic()
            result.started_at = datetime.now(UTC)
            result.drift_at = result.started_at + timedelta(seconds=config.drift_at_s)
            fleet.start()
            traffic = (f"drift at {config.drift_at_s:g}s" if config.trace is None
                       else f"replaying {config.trace}")  # fmt: skip
            on_line(f"fleet {config.run_id}: {config.nodes} nodes, {config.rate:g} req/s, "
                    f"{config.duration_s:g}s, {traffic}")  # fmt: skip
            try:
                while fleet.running():
                    time.sleep(config.refresh_s)
                    children.check()
                    sample = _sample(reader, config, fleet, acks, t0, ch)
                    result.samples.append(sample)
                    on_sample(sample)
            except KeyboardInterrupt:
                result.interrupted = True
                on_line("interrupted: stopping the fleet, the controller and the worker")
            fleet.stop()
            if fleet.error is not None:
                msg = f"the simulated fleet failed: {fleet.error}"
                raise DemoError(msg) from fleet.error
            if not result.interrupted:
                on_line("traffic done; letting the worker sink the last outcomes")
                time.sleep(8)
                result.samples.append(_sample(reader, config, fleet, acks, t0, ch))
            result.em = observe.em_series(ch, config.policy_name)
            result.events_in_clickhouse = observe.event_count(ch, config.policy_name)
            result.registry = observe.registry(reader, config.policy_name, bodies=True)
    finally:
        fleet.stop()
        acks.stop()
        ch.close()
        result.exit_codes = dict(children.exit_codes)
        result.child_pids = {c.name: c.pid for c in children.started}
    result.acked = acks.versions()
    result.refused = len(acks.refused)
    on_line("computing the ground truth (oracle and static baseline)")
    result.figures = figures(result)
    result.report = write_report(settings, result, result.figures)
    return result
