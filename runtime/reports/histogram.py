"""PNG latency histogram with the budget, the gated percentile and its upper confidence bound."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgecomp.io import atomic_path
from edgecomp.runtime.report import ProfileReport


def write_histogram(report: ProfileReport, path: str | Path, *, budget_ms: float | None = None,
                    percentile: float | None = None, upper_bound_ms: float | None = None) -> Path:
    """Latency histogram with the percentile, its upper confidence bound (`upper_bound_ms`, the gate's
    possibly widened one, or else the order-statistic bound) and the budget."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x = np.asarray(report.latency.samples_ms, dtype=np.float64)
    if budget_ms is not None and not math.isfinite(budget_ms):
        budget_ms = None  # no budget: nothing to draw
    ps = None
    if percentile is not None:
        try:
            ps = report.latency.percentile(percentile)
        except KeyError:
            ps = None
    upper = None if ps is None else (upper_bound_ms if upper_bound_ms is not None else ps.upper_bound)
    marks = [] if ps is None else [v for v in (ps.value, upper) if math.isfinite(v)]
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = view_range(x, budget_ms, marks)
    shown = x[(x >= lo) & (x <= hi)]
    hidden = x.size - shown.size
    n_bins = min(60, max(10, int(math.sqrt(max(shown.size, 1)))))
    spread = lo > 0 and hi / lo > 8  # a heavy tail or two modes an order of magnitude apart: log axis
    bins = np.geomspace(lo, hi, n_bins + 1) if spread else np.linspace(lo, hi, n_bins + 1)
    label = f"n = {x.size}" + (f" ({hidden} slower than {hi:.3g} ms not shown)" if hidden else "")
    counts, _, _ = ax.hist(shown, bins=bins, color="#4C72B0", alpha=0.85, label=label)
    if spread:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.45 * max(float(np.max(counts)) if len(counts) else 0.0, 1.0))  # room for the legend
    if ps is not None:
        ax.axvline(ps.value, color="#333333", linestyle="--", label=f"p{percentile:g} = {ps.value:.4g} ms")
        if math.isfinite(upper):
            ax.axvline(upper, color="#DD8452", linestyle=":", label=f"{ps.confidence:.0%} upper bound = {upper:.4g} ms")
    if budget_ms is not None and lo <= budget_ms <= hi:
        ax.axvline(budget_ms, color="#C44E52", linewidth=2, label=f"budget = {budget_ms:g} ms")
    elif budget_ms is not None:  # far off the samples: an arrow at the edge it lies beyond
        right = budget_ms > hi
        ax.annotate(f"budget {budget_ms:g} ms \u2192" if right else f"\u2190 budget {budget_ms:g} ms",
                    xy=(0.99 if right else 0.01, 0.8), xycoords="axes fraction", ha="right" if right else "left",
                    color="#C44E52", fontsize=10, fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#C44E52"})
    ax.set_xlabel("latency per inference (ms)" + (", log scale" if spread else ""))
    ax.set_ylabel("count")
    ax.set_title(f"{Path(report.artifact['path']).name} on {report.target['url']} — {report.runtime.get('name')} "
                 f"{report.runtime.get('version')}", fontsize=9)
    budget_left = budget_ms is not None and budget_ms < lo
    ax.legend(fontsize=8, loc="upper right" if budget_left else "upper left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def view_range(samples: np.ndarray, budget_ms: float | None, marks=()) -> tuple[float, float]:
    """x range of the histogram: the samples up to their 99.5th percentile (a few slow outliers must not
    squash the bulk into one bin) and the percentile marks, widened to the budget when it lies within 2x
    of that span, else left out (the plot points at it with an arrow)."""
    if samples.size == 0:
        return (0.0, budget_ms if budget_ms and math.isfinite(budget_ms) else 1.0)
    lo = min([float(samples.min()), *marks])
    hi = max([float(np.quantile(samples, 0.995)), *marks])
    if budget_ms is not None and math.isfinite(budget_ms) and lo / 2 <= budget_ms <= 2 * hi:
        lo, hi = min(lo, budget_ms), max(hi, budget_ms)
    if lo > 0 and hi / lo > 8:  # drawn on a log axis: pad by a factor
        return (lo / 1.1, hi * 1.1)
    pad = 0.04 * (hi - lo) if hi > lo else 0.05 * max(hi, 1e-9)
    return (max(0.0, lo - pad), hi + pad)
