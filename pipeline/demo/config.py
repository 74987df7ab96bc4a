"""What a demo run is: its options, its private policy name, signing key and spec."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Settings
from pipeline.controller.config import controller_settings

NODE_EXPLORATION_CAP = 0.5
"""The demo nodes' ``max_exploration_share`` (the largest the contract allows)."""
TRACE_MIN_TOKENS = 8
"""``min_tokens`` of a trace run: ``pipeline capture``'s default checkpoint spacing."""


def _run_id() -> str:
    return f"demo{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Options of one demo run.

    Attributes:
        duration_s: Seconds of simulated traffic (the drift starts halfway).
        nodes: Simulated inference nodes.
        rate: Requests per second of the whole fleet.
        seed: Seed of the traffic and of the ground truth.
        period_s: Seconds between optimize cycles (None: about duration / 8, 15..60).
        window_s: Exploration outcomes older than this are ignored by a cycle
            (None: three periods and at least 90 s: short enough that the drift
            leaves the window soon, long enough to hold ``min_samples``).
        canary_share: Share of traffic a proposal's canary gets (0: straight to production).
        epsilon: The tolerance the acceptance numbers are computed at (normal load mode).
        run_id: Prefix of request and node ids; also names the policy ``<run_id>``.
        refresh_s: Seconds between live samples.
        truth_samples: Monte Carlo samples per segment for the oracle and baseline.
        trace: A trajectory file (``pipeline capture``) the fleet replays instead of
            the simulated model (no drift then; the yardsticks come from its records).
        history: Exploration samples per segment of a simulated history (another
            seed, before the drift) fed to the certificates before live traffic
            (:mod:`pipeline.demo.history`); 0 starts cold. Not used with ``trace``.
    """

    duration_s: float = 240.0
    nodes: int = 4
    rate: float = 150.0
    seed: int = 0
    period_s: float | None = None
    window_s: float | None = None
    canary_share: float = 0.0
    epsilon: float = 0.02
    run_id: str = field(default_factory=_run_id)
    refresh_s: float = 3.0
    truth_samples: int = 4000
    trace: Path | None = None
    history: int = 1000

    @property
    def policy_name(self) -> str:
        """A policy family of its own, so runs and tests never see each other's versions."""
        return self.run_id

    @property
    def period(self) -> float:
        """Seconds between optimize cycles."""
        return self.period_s if self.period_s else min(60.0, max(15.0, self.duration_s / 8))

    @property
    def window(self) -> float:
        """The controller's window of exploration outcomes."""
        return self.window_s if self.window_s else max(90.0, 3 * self.period)

    @property
    def min_tokens(self) -> int | None:
        """The spec's ``min_tokens`` override: a trace's first checkpoint (None: the spec's).

        Captured answers are short (tens of tokens): the spec's 32 would leave
        little to stop early, so a trace run may stop from its first checkpoint on.
        """
        return TRACE_MIN_TOKENS if self.trace is not None else None

    @property
    def drift_at_s(self) -> float:
        """Seconds into the traffic when the drift starts."""
        return self.duration_s / 2


def run_dir(settings: Settings, config: DemoConfig) -> Path:
    """Where this run's spec, logs and report go."""
    return settings.state_dir / "demo" / config.run_id


def write_spec(settings: Settings, config: DemoConfig, folder: Path) -> Path:
    """Write the demo's policy spec: the reviewed spec, tuned so a few minutes show cycles.

    Changes from ``policies/earlystop.yaml``: the run's own policy name, a
    20% exploration share in every segment that stops early so each cycle has
    samples, and the nodes' cap in those that do not, a
    larger step per cycle, auto-approval bounds wide enough that proposals
    go live without a reviewer (pooled certificates included), the canary
    share of ``config``, and on a trace run its ``min_tokens``.
    """
    source = controller_settings(settings).spec_path
    data: dict[str, Any] = yaml.safe_load(source.read_text())
    data["name"] = config.policy_name
    data["exploration_share"] = 0.2
    # No floor: in a few minutes the drifted segment's detectors need every sample.
    data["exploration_floor"] = None
    # A segment that serves no early stop (restarted by the drift) explores at the
    # demo nodes' cap: it runs to the end anyway and re-certifies sooner.
    data["exploration_ceiling"] = NODE_EXPLORATION_CAP
    data["min_samples"] = 300
    data["max_step"] = 0.1
    # pooled: a demo shortcut. A few minutes give a segment a few hundred samples of its
    # own, so most thresholds are certified on a task's pooled samples; in production a
    # reviewer decides those (the pooled promise is not the segment's own).
    data["auto_approve"] = {
        "max_step": 0.1,
        "max_em_drop_bound": 0.05,
        "min_samples": 300,
        "pooled": True,
    }
    data["canary"] = {
        "share": config.canary_share,
        "min_samples": 150,
        "max_samples": 4000,
        "alpha": 0.05,
    }
    if config.min_tokens is not None:
        data["segments"]["settings"]["global"]["min_tokens"] = config.min_tokens
    folder.mkdir(parents=True, exist_ok=True)
    default = source.parent / str(data["default_policy"])
    shutil.copyfile(default, folder / default.name)
    data["default_policy"] = default.name
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def signing_key() -> tuple[str, str]:
    """A fresh key id and HMAC key for this run's control updates."""
    return f"demo-{secrets.token_hex(3)}", secrets.token_urlsafe(32)
