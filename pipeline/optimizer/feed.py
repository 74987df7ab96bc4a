"""The order a population's rows of one cycle are fed to its certificates."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from pipeline.optimizer.curve import ExplorationBatch


def interleave(
    key: str, blocks: list[np.ndarray[Any, Any]], batches: list[ExplorationBatch], seen: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """One population's rows of this cycle, its segments' rows interleaved as traffic arrives.

    Returns the interleaved rows and, for each, its index in the blocks stacked
    one after the other (so a caller can find which batch and row it came from).

    The betting test needs each row to be a draw from the population's mixture
    given the rows before it: segments fed one after the other would let an
    easy segment certify before a hard one is seen. Rows are merged by request
    time when every batch has it (the reader's); otherwise (offline batches)
    by a random interleaving, seeded by the population and its sample count,
    which is what arrivals of a stationary mixture look like.
    """
    if len(blocks) == 1:
        return blocks[0], np.arange(len(blocks[0]))
    stacked = np.vstack(blocks)
    arrivals = [b.arrival for b in batches]
    if all(a is not None for a in arrivals):
        order = np.argsort(np.concatenate([a for a in arrivals if a is not None]), kind="stable")
    else:
        seed = zlib.crc32(key.encode()) ^ seen
        order = np.random.default_rng(seed).permutation(len(stacked))
    return stacked[order], order
