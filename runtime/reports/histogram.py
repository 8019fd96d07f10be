"""PNG latency histogram with the budget, the gated percentile and its upper confidence bound."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgecomp.io import atomic_path
from runtime.report import ProfileReport


def write_histogram(report: ProfileReport, path: str | Path, *, budget_ms: float | None = None,
                    percentile: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x = np.asarray(report.latency.samples_ms, dtype=np.float64)
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    bins = min(60, max(10, int(math.sqrt(x.size))))
    ax.hist(x, bins=bins, color="#4C72B0", alpha=0.85, label=f"n = {x.size}")
    if percentile is not None:
        try:
            ps = report.latency.percentile(percentile)
        except KeyError:
            ps = None
        if ps is not None:
            ax.axvline(ps.value, color="#333333", linestyle="--", label=f"p{percentile:g} = {ps.value:.4g} ms")
            if math.isfinite(ps.upper_bound):
                ax.axvline(ps.upper_bound, color="#DD8452", linestyle=":",
                           label=f"{ps.confidence:.0%} upper bound = {ps.upper_bound:.4g} ms")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="#C44E52", linewidth=2, label=f"budget = {budget_ms:g} ms")
    ax.set_xlabel("latency per inference (ms)")
    ax.set_ylabel("count")
    ax.set_title(f"{Path(report.artifact['path']).name} on {report.target['url']} — {report.runtime.get('name')} "
                 f"{report.runtime.get('version')}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
