"""The optimizer: per-segment early-stop thresholds with an EM-drop guarantee.

Pure: no Kafka, ClickHouse or MLflow. A cycle reads exploration samples
(:class:`ExplorationBatch` per ``tenant/task/length_bucket`` key, or :class:`Curve`
counts), runs :func:`optimize` under a :class:`PolicySpec`, and returns a
:class:`Proposal`: the :class:`~schemas.PolicyBody` to publish plus, per key
and load mode, the threshold, its certificate, savings, bounds, counts and
Pareto data. :func:`review_reasons` says whether it needs a reviewer;
:func:`guardrail_verdict` judges a canary against production with
always-valid sequential tests.

It imports numpy and scipy, never an I/O library nor the server side:
:mod:`pipeline.controller` reads ClickHouse into batches and hands the
proposal to :mod:`pipeline.registry` (``tests/unit/test_optimizer_imports.py``
checks it).

Errors: :class:`OptimizerError` (bad input), :class:`SpecError` (bad spec).
"""

from pipeline.optimizer.curve import (
    Curve,
    ExplorationBatch,
    Trajectory,
    evaluate,
    trajectory_from_outcome,
)
from pipeline.optimizer.errors import OptimizerError, SpecError
from pipeline.optimizer.ltt import (
    LttResult,
    binomial_p_value,
    clopper_pearson_upper,
    empirical_oracle,
    hoeffding_bentkus_p_value,
    learn_then_test,
    min_certifiable_samples,
)
from pipeline.optimizer.pareto import ParetoPoint, pareto_front, pareto_points
from pipeline.optimizer.proposal import Proposal, SegmentDecision
from pipeline.optimizer.review import guardrail_verdict, review_reasons
from pipeline.optimizer.select import current_threshold, limit_step, optimize
from pipeline.optimizer.sequential import (
    CanaryVerdict,
    Evidence,
    canary_verdict,
    log_wealth,
    paired_differences,
)
from pipeline.optimizer.spec import PolicySpec, load_spec, parse_spec

__all__ = [
    "ExplorationBatch",
    "Curve",
    "Evidence",
    "LttResult",
    "OptimizerError",
    "ParetoPoint",
    "PolicySpec",
    "Proposal",
    "SegmentDecision",
    "SpecError",
    "Trajectory",
    "CanaryVerdict",
    "binomial_p_value",
    "canary_verdict",
    "clopper_pearson_upper",
    "current_threshold",
    "empirical_oracle",
    "evaluate",
    "guardrail_verdict",
    "hoeffding_bentkus_p_value",
    "learn_then_test",
    "limit_step",
    "load_spec",
    "log_wealth",
    "min_certifiable_samples",
    "optimize",
    "paired_differences",
    "pareto_front",
    "pareto_points",
    "parse_spec",
    "review_reasons",
    "trajectory_from_outcome",
]
