"""The Pareto plot of a proposal: tokens saved against EM drop, per segment.

Drawn with matplotlib's object API on the Agg canvas: no pyplot global state,
no display, safe in a server thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.registry.draft import Frontier

MAX_SEGMENTS_DRAWN = 40
MAX_LEGEND = 12


def chosen_point(frontier: Frontier) -> tuple[float, float] | None:
    """``(em_drop, tokens_saved)`` of the point nearest the chosen threshold, or None."""
    if frontier.chosen is None or not frontier.points:
        return None
    chosen = frontier.chosen
    _, saved, drop = min(frontier.points, key=lambda p: abs(p[0] - chosen))
    return drop, saved


def write_pareto_png(
    frontiers: Mapping[str, Frontier], path: Path, title: str = "policy proposal"
) -> Path:
    """Draw one curve per segment with its chosen point starred, save it as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    keys = sorted(frontiers)
    shown = keys[:MAX_SEGMENTS_DRAWN]
    for i, key in enumerate(shown):
        frontier = frontiers[key]
        points = sorted(frontier.points, key=lambda p: p[2])
        label = key if i < MAX_LEGEND else None
        (line,) = ax.plot(
            [p[2] for p in points], [p[1] for p in points], marker=".", linewidth=1, label=label
        )
        chosen = chosen_point(frontier)
        if chosen is not None:
            ax.scatter(
                [chosen[0]],
                [chosen[1]],
                marker="*",
                s=180,
                color=line.get_color(),
                edgecolors="black",
                zorder=3,
            )
    if len(keys) > len(shown):
        title += f" (first {len(shown)} of {len(keys)} segments)"
    ax.set_title(title)
    ax.set_xlabel("EM drop (share of requests)")
    ax.set_ylabel("tokens saved (share)")
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(title="segment (* = chosen)", fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "no trade-off data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
