"""The simulated fleet: requests, early stops, labels, feedback, and their ground truth.

Pure and seeded (:mod:`~pipeline.sim.model`, :mod:`~pipeline.sim.stopping`,
:mod:`~pipeline.sim.oracle`, :mod:`~pipeline.sim.signals`,
:mod:`~pipeline.sim.fleet`): the same seed gives the same requests, stops,
messages and oracle. Only :mod:`pipeline.sim.runner` does I/O, through the
node SDK, and it is not imported here so the pure parts load without Kafka.
:mod:`pipeline.sim.trace` replaces the simulated model by captured real
trajectories (``pipeline sim --trace``), pure too once its file is read.

Typical use::

    scen = scenario("drift", drift_at=5_000)
    truth = ground_truth(scen, seed=1, epsilon=0.02)      # oracle per segment
    req = generate(scen, seed=7, index=42)                 # one request
    stop = early_stop(req.latent.tokens, req.latent.confidence, 0.9, min_tokens=32)
"""

from pipeline.sim.errors import SimError
from pipeline.sim.fleet import Served, SimClock, load_at, serve, simulate
from pipeline.sim.model import Latent, SimRequest, generate, request_id, sample_latent
from pipeline.sim.oracle import (
    DEFAULT_GRID,
    DEFAULT_MIN_TOKENS,
    CurvePoint,
    OracleRow,
    em_curve,
    ground_truth,
    oracle_threshold,
    sample_segment,
)
from pipeline.sim.scenario import (
    DRIFT_SEGMENT,
    Drift,
    Scenario,
    ScenarioName,
    SegmentSpec,
    scenario,
)
from pipeline.sim.signals import (
    FeedbackConfig,
    LabelConfig,
    Outbox,
    Scheduled,
    delivery_order,
    feedback_for,
    labels_for,
)
from pipeline.sim.stopping import StopPoint, early_stop, stop_index

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_MIN_TOKENS",
    "DRIFT_SEGMENT",
    "CurvePoint",
    "Drift",
    "FeedbackConfig",
    "LabelConfig",
    "Latent",
    "OracleRow",
    "Outbox",
    "Scenario",
    "ScenarioName",
    "Scheduled",
    "SegmentSpec",
    "Served",
    "SimClock",
    "SimError",
    "SimRequest",
    "StopPoint",
    "delivery_order",
    "early_stop",
    "em_curve",
    "feedback_for",
    "generate",
    "ground_truth",
    "labels_for",
    "load_at",
    "oracle_threshold",
    "request_id",
    "sample_latent",
    "sample_segment",
    "scenario",
    "serve",
    "simulate",
    "stop_index",
]
