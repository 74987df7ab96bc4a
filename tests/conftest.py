"""Settings for the whole suite.

Property tests (Hypothesis) draw their examples from a fixed seed by default,
so a CI run is the same run every time and a red gate is never luck; no
example has a deadline, because this suite runs on shared, noisy machines
and speed is checked by ``bench/``, not by tests. ``HYPOTHESIS_PROFILE=explore``
draws fresh random examples (500 where a test does not set its own number) to
look for new failures.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=500, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
