"""One-look certificates of the signed EM drop: valid at the boundary, stronger with gains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.optimizer.ltt import binomial_p_value, signed_p_value, signed_upper

DELTA = 0.1


@pytest.mark.parametrize(
    ("n", "p_loss", "p_gain"),
    [(45, 0.10, 0.0), (45, 0.15, 0.05), (200, 0.06, 0.01), (500, 0.25, 0.20), (1000, 0.05, 0.0)],
)
def test_at_the_boundary_a_bad_threshold_is_certified_at_most_delta_of_the_time(
    n: int, p_loss: float, p_gain: float
) -> None:
    # The true mean signed drop is exactly epsilon: every rejection is an error.
    epsilon = p_loss - p_gain
    rng = np.random.default_rng(n)
    runs = 20_000
    counts = rng.multinomial(n, [p_loss, p_gain, 1 - p_loss - p_gain], size=runs)
    p = signed_p_value(counts[:, 0], counts[:, 1], n, epsilon)
    wrong = float(np.mean(p <= DELTA))
    assert wrong <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / runs)
    # p-values are valid at every level, not only delta.
    assert float(np.mean(p <= 0.02)) <= 0.02 + 3 * math.sqrt(0.02 * 0.98 / runs)


def test_gains_certify_where_the_one_sided_loss_cannot() -> None:
    # 8% of requests made worse, 5% made better: a mean drop of 3%, certified at 5%.
    losses, gains, n = np.array([160]), np.array([100]), 2000
    assert signed_p_value(losses, gains, n, 0.05)[0] <= DELTA
    assert binomial_p_value(losses, n, 0.05)[0] > 0.99
    # Without gains the split costs little: 0 losses of 45 at epsilon 0.1.
    assert signed_p_value(np.array([0]), np.array([0]), 45, 0.1)[0] <= DELTA


def test_the_bound_is_the_p_values_dual_and_falls_with_more_samples() -> None:
    losses, gains = np.array([30]), np.array([10])
    p = signed_p_value(losses, gains, 400, 0.08)[0]
    assert signed_upper(losses, gains, 400, p * 1.001)[0] <= 0.08 + 1e-9
    assert signed_upper(losses, gains, 400, p * 0.9)[0] > 0.08
    assert (
        signed_upper(losses * 10, gains * 10, 4000, DELTA)[0]
        < signed_upper(losses, gains, 400, DELTA)[0]
    )
    assert signed_p_value(np.array([0]), np.array([0]), 0, 0.1)[0] == 1.0
