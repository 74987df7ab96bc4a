"""The serving node's Prometheus metrics, on the stream worker's hand-written registry.

Names (all prefixed ``serve_``): requests by stop reason and outcome, tokens
by kind (prompt, generated, probe), busy slots, queue length, the load
signal, the load mode (one gauge per mode, 1 for the current one) and the
policy version served.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.stream.metrics import Metrics
from schemas import LoadMode

SERVE_HELP: Mapping[str, tuple[str, str]] = {
    "serve_requests_total": (
        "counter",
        "Finished requests, by stop_reason (confident, budget, natural_end) and exploration.",
    ),
    "serve_requests_failed_total": (
        "counter",
        "Requests that did not finish, by reason (cancelled, bad_request, queue_full, error).",
    ),
    "serve_tokens_total": ("counter", "Tokens by kind: prompt, generated, probe."),
    "serve_events_dropped_total": ("counter", "Inference events the emitter refused."),
    "serve_slots": ("gauge", "Generation slots of this node."),
    "serve_slots_busy": ("gauge", "Slots generating now."),
    "serve_queue_length": ("gauge", "Requests waiting for a slot."),
    "serve_load": ("gauge", "The load signal: (busy + queued) / slots, clipped to [0, 1]."),
    "serve_load_mode": ("gauge", "1 for the controller's current load mode, by mode."),
    "serve_policy_version": ("gauge", "The policy version the controller serves, by policy."),
}

LOAD_MODES: tuple[LoadMode, ...] = ("offpeak", "normal", "peak")


class ServeMetrics(Metrics):
    """:class:`~pipeline.stream.metrics.Metrics` rendering the serving node's HELP lines."""

    def set_load_mode(self, mode: LoadMode) -> None:
        """Set the one-hot load mode gauges."""
        for name in LOAD_MODES:
            self.set("serve_load_mode", 1.0 if name == mode else 0.0, mode=name)

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        text = super().render()
        # The base renders its own HELP table; swap in ours for the serve_ names and
        # drop the worker's metrics, which this process never sets.
        lines: list[str] = []
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                name = line.split(" ", 3)[2]
                if name not in SERVE_HELP:
                    continue
                kind, help_text = SERVE_HELP[name]
                line = f"# HELP {name} {help_text}" if line[2] == "H" else f"# TYPE {name} {kind}"
            elif not line.startswith("serve_"):
                continue
            lines.append(line)
        return "\n".join(lines) + "\n"
