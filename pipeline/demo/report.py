"""The run's report: PNG plots of tokens saved and EM over time, and an HTML page.

Made with matplotlib's Agg backend (no display needed) under the run's folder.
"""

from __future__ import annotations

import base64
import html
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  # after the backend is chosen

from pipeline.config import Settings  # noqa: E402

if TYPE_CHECKING:
    from pipeline.demo.acceptance import Figure
    from pipeline.demo.run import DemoResult


def _version_changes(result: DemoResult) -> list[tuple[float, int]]:
    changes: list[tuple[float, int]] = []
    last = None
    for s in result.samples:
        if s.production is not None and s.production != last:
            changes.append((s.t, s.production))
            last = s.production
    return changes


def plot(result: DemoResult, path: Path) -> Path:
    """Tokens saved (per sample interval) and EM (per 15 s) over time, versions marked."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    pts = list(zip(result.samples, result.samples[1:], strict=False))
    xs = [b.t for a, b in pts if b.tokens_full > a.tokens_full]
    ys = [100 * (1 - (b.tokens_generated - a.tokens_generated) / (b.tokens_full - a.tokens_full))
          for a, b in pts if b.tokens_full > a.tokens_full]  # fmt: skip
    top.plot(xs, ys, color="tab:green", label="fleet tokens saved vs full generation (%)")
    top.set_ylabel("tokens saved (%)")
    if result.started_at is not None:
        t0 = result.started_at
        ts = [(b.t - t0).total_seconds() + 7.5 for b in result.em]
        served = [b.served_rate for b in result.em]
        full = [b.full_rate for b in result.em]
        bottom.plot(
            [t for t, v in zip(ts, served, strict=True) if v is not None],
            [v for v in served if v is not None],
            "o-",
            label="EM served (early stop)",
        )
        bottom.plot(
            [t for t, v in zip(ts, full, strict=True) if v is not None],
            [v for v in full if v is not None],
            "s--",
            label="EM full generation",
        )
    bottom.set_ylabel("exact match")
    bottom.set_xlabel("seconds since the fleet started")
    for ax in (top, bottom):
        for t, v in _version_changes(result):
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
            if ax is top:
                ax.annotate(f"v{v}", (t, 1), xycoords=("data", "axes fraction"),
                            fontsize=8, va="top")  # fmt: skip
        if result.config.trace is None:
            ax.axvline(result.config.drift_at_s, color="tab:red", linewidth=1, label="drift")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"pipeline demo {result.config.run_id}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(settings: Settings, result: DemoResult, rows: list[Figure] | None = None) -> Path:
    """Write ``report.png`` and ``report.html`` in the run's folder; the HTML's path."""
    png = plot(result, result.folder / "report.png")
    image = base64.b64encode(png.read_bytes()).decode()
    table = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{html.escape(r.value)}</td>"
        f"<td>{'' if r.ok is None else ('yes' if r.ok else 'NO')}</td>"
        f"<td>{html.escape(r.against)}</td></tr>"
        for r in rows or []
    )
    versions = "".join(f"<li>v{v}: {html.escape(d)}</li>" for v, d in result.registry.history)
    cfg = result.config
    drift = ""
    if result.drift_at is not None:
        drift = f", drift at {(result.drift_at + timedelta(0)).isoformat(timespec='seconds')}"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>pipeline demo {cfg.run_id}</title></head><body>
<h1>pipeline demo {html.escape(cfg.run_id)}</h1>
<p>{cfg.nodes} nodes, {cfg.rate:g} req/s, {cfg.duration_s:g}s, seed {cfg.seed}{drift};
cycles every {cfg.period:g}s on a {cfg.window:g}s window; policy {html.escape(cfg.policy_name)};
MLflow: <a href="{settings.mlflow.tracking_uri}">{settings.mlflow.tracking_uri}</a></p>
<table border="1" cellpadding="4"><tr><th>figure</th><th>value</th><th>met</th><th>against</th></tr>
{table}</table>
<h2>Policy versions</h2><ul>{versions}</ul>
<img src="data:image/png;base64,{image}" alt="tokens saved and EM over time">
</body></html>"""
    path = result.folder / "report.html"
    path.write_text(page)
    return path
