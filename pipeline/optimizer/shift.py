"""A fast detector of a harmful change in one rule's outcomes, against the epoch's own rates.

:class:`~pipeline.optimizer.anytime.HarmDetector` tests the boundary "mean loss
above ε" and knows nothing of what the population did before: with the
signed loss it needs about 300 samples to notice a segment whose deployed
rule went from a mean drop of 0 to 0.13 (bet 0.5, alarm at 10,000), because
every early-right/full-wrong request costs it as much as a loss earns.

:class:`ShiftDetector` watches the same rule's outcomes (loss, gain, tie)
against the rates this epoch has measured for it (the reference ``p``), with
a harmful alternative ``q``: losses up by whatever moves the mean loss to
``ε + margin`` (at least ``margin`` above its reference), taken from ties,
gains unchanged. Its wealth is the CUSUM of the likelihood ratio ``q / p``
(it restarts at 1 whenever it falls below): while outcomes keep their
reference rates, the expected time to a false alarm is at least
``threshold`` samples (Ville's inequality on the ratio martingale, as for any
CUSUM); after such a change it grows by KL(q_true || p) per sample, about
0.1 for the drift above, so about 100 samples raise the alarm.

The reference is estimated, so it is taken conservatively (the loss rate's
upper standard error) and only from at least ``min_reference`` samples.
What an alarm costs is savings, never safety: the population restarts its
certificates (a new epoch) and serves no early stop until they certify
again. The promise of the certificates does not depend on this detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from pipeline.optimizer.anytime import cusum

MIN_REFERENCE = 200
"""Samples of the epoch at the watched rule before the detector runs."""


@dataclass(frozen=True, slots=True)
class ShiftDetector:
    """CUSUM of "the watched rule's losses rose, at the expense of ties, to ``ε + margin``".

    Attributes:
        epsilon: The tolerated mean loss.
        threshold: Alarm level (bound on the mean run length to a false alarm
            while outcomes keep their reference rates).
        log_wealth: Current log wealth (0 after a restart).
        n: Samples seen.
    """

    epsilon: float
    threshold: float = 10_000.0
    log_wealth: float = 0.0
    n: int = 0

    @property
    def margin(self) -> float:
        """How far above ε (and above its reference) the alternative puts the mean loss."""
        return self.epsilon

    def steps(self, losses: int, gains: int, n: int) -> tuple[float, float, float] | None:
        """Log likelihood ratio of a loss, a gain and a tie against reference counts.

        Returns None when the reference is too thin (fewer than
        :data:`MIN_REFERENCE` samples) or leaves no ties to take losses from.
        """
        if n < MIN_REFERENCE:
            return None
        p_loss = (losses + 0.5) / (n + 1.0)
        p_loss = min(1.0, p_loss + math.sqrt(p_loss * (1.0 - p_loss) / n))
        p_gain = (gains + 0.5) / (n + 1.0)
        p_tie = 1.0 - p_loss - p_gain
        target = max(self.epsilon, p_loss - p_gain) + self.margin
        shift = target - (p_loss - p_gain)
        if p_tie <= 2.0 * shift:
            return None
        return (math.log1p(shift / p_loss), 0.0, math.log1p(-shift / p_tie))

    def update(
        self, d: npt.ArrayLike, reference: tuple[int, int, int]
    ) -> tuple[ShiftDetector, int | None]:
        """Add losses in arrival order, judged against ``reference`` (losses, gains, n).

        Returns the new detector and the alarm sample (1-based, counted from the
        detector's first sample), if any; after an alarm the caller restarts
        what the detector watched. With too thin a reference the samples are
        counted and nothing else happens.
        """
        values = np.asarray(d, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return self, None
        logs = self.steps(*reference)
        if logs is None:
            return replace(self, log_wealth=0.0, n=self.n + values.size), None
        up, _, down = logs
        steps = np.where(values > 0, up, np.where(values < 0, 0.0, down))
        log_wealth, at = cusum(self.log_wealth, steps, self.threshold)
        if at is not None:
            return replace(self, log_wealth=0.0, n=self.n + at), self.n + at
        return replace(self, log_wealth=log_wealth, n=self.n + values.size), None
