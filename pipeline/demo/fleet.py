"""The simulated fleet of a demo run, in a thread of the demo process.

Nodes use the real SDK: they follow the run's policy from the control topic,
verify it with the run's signing key and acknowledge each version.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.demo.config import NODE_EXPLORATION_CAP, DemoConfig
from pipeline.node import Emitter, EmitterSettings, Node
from pipeline.sim.runner import FleetRunner, RunConfig, RunSummary
from pipeline.sim.scenario import Scenario, scenario
from pipeline.sim.trace import read_trace


def demo_scenario(config: DemoConfig) -> Scenario:
    """The standard segments with one drifting at half the duration (for a trace: the load)."""
    return scenario("drift", drift_at=int(config.drift_at_s * config.rate))


@dataclass
class Fleet:
    """A :class:`FleetRunner` run in a background thread."""

    settings: Settings
    config: DemoConfig
    key_id: str
    key: str
    summary: RunSummary | None = None
    error: BaseException | None = None
    runner: FleetRunner | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        """Build the nodes and start serving (nodes start in the thread)."""
        cfg, settings = self.config, self.settings
        run = RunConfig(
            nodes=cfg.nodes,
            rate=cfg.rate,
            duration_s=cfg.duration_s,
            seed=cfg.seed,
            run_id=cfg.run_id,
            scenario=demo_scenario(cfg),
            linger_s=15.0,
            trace=None if cfg.trace is None else read_trace(cfg.trace),
        )
        template = settings.node.model_copy(
            update={
                "policy_name": cfg.policy_name,
                "signing_keys": SecretStr(f'{{"{self.key_id}": "{self.key}"}}'),
                "allowed_algorithms": "hmac-sha256",  # the demo's run-local key
                "bootstrap_timeout_s": 20.0,
                "max_exploration_share": NODE_EXPLORATION_CAP,
                "retry_interval_s": 1.0,
                # The worker's aiokafka cannot read lz4 without cramjam (not installed).
                "emitter": settings.node.emitter.model_copy(update={"compression": "none"}),
            }
        )

        def make_node(i: int) -> Node:
            node_id = f"{cfg.run_id}-node-{i}"
            node_dir = settings.state_dir / "demo" / cfg.run_id / "nodes" / node_id
            return Node(settings.kafka, template.model_copy(
                update={"node_id": node_id, "state_dir": node_dir}))  # fmt: skip

        self.runner = FleetRunner(
            run,
            make_node,
            Emitter(settings.kafka, EmitterSettings(topic="em-labels", compression="none")),
            Emitter(settings.kafka, EmitterSettings(topic="user-feedback", compression="none")),
        )
        self._thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.runner is not None  # noqa: S101  # set by start()
        try:
            self.summary = self.runner.run()
        except BaseException as exc:  # noqa: BLE001  # reported by the demo's main thread
            self.error = exc

    def running(self) -> bool:
        """True while the fleet serves or lingers."""
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> RunSummary:
        """Counters now."""
        return self.runner.snapshot() if self.runner is not None else RunSummary()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop traffic now and wait until the producers are flushed."""
        if self.runner is not None:
            self.runner.stop()
        self.join(timeout)

    def join(self, timeout: float) -> None:
        """Wait for the run to end by itself."""
        if self._thread is not None:
            self._thread.join(timeout)
