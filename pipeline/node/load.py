"""Load mode from the node's load signal, with hysteresis.

Thresholds differ per load mode (looser at peak to shed work). Without
hysteresis a load hovering at a boundary would flip the threshold between
consecutive requests and blur the analysis of both modes.
"""

from __future__ import annotations

import math

from pipeline.node.config import LoadBands
from schemas import LoadMode


def next_load_mode(current: LoadMode, load: float, bands: LoadBands) -> LoadMode:
    """The load mode after observing ``load`` (0 idle .. 1 saturated) in mode ``current``.

    A mode is entered at its ``*_enter`` bound and left only past its
    ``*_exit`` bound. A NaN reading is ignored (the mode stays); other values
    are clamped to [0, 1].
    """
    if math.isnan(load):
        return current
    load = min(1.0, max(0.0, load))
    if current == "peak":
        if load >= bands.peak_exit:
            return "peak"
        return "offpeak" if load <= bands.offpeak_enter else "normal"
    if current == "offpeak":
        if load <= bands.offpeak_exit:
            return "offpeak"
        return "peak" if load >= bands.peak_enter else "normal"
    if load >= bands.peak_enter:
        return "peak"
    if load <= bands.offpeak_enter:
        return "offpeak"
    return "normal"
