"""PNG charts for report.html, drawn so nothing is invisible at its scale.

Budgets and models can differ by orders of magnitude (a 36 M-MAC model on a 7.7 G-MAC device), so
costs are drawn as ratios to the original model on a log axis, where 0.3x and 200x are both readable;
an infinite budget is written as text, never plotted.
"""

from __future__ import annotations

import base64
from pathlib import Path

from edgecomp.io import atomic_path
from edgecomp.report.facts import BudgetRow
from edgecomp.report.fmt import is_bounded, ratio, si

COLORS = {"original": "#8c959f", "achieved": "#0969da", "budget": "#cf222e", "text": "#24292f"}


def data_uri(path: str | Path | None) -> str | None:
    """The PNG file as a data: URI (None when there is no such file)."""
    if not path or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def budget_chart(rows: list[BudgetRow], path: Path) -> Path | None:
    """Horizontal log-scale chart: achieved cost / original per resource, the budget as a red mark.

    Only rows with an original value (MACs, memory) are drawn; None when there is none.
    """
    rows = [r for r in rows if r.original and r.achieved is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    values = [1.0]
    for r in rows:
        values.append(r.achieved / r.original)
        if is_bounded(r.budget):
            values.append(r.budget / r.original)
    lo, hi = min(values) / 3, max(values) * 3
    fig = Figure(figsize=(7.2, 0.9 + 0.75 * len(rows)), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for y, r in enumerate(reversed(rows)):
        achieved = r.achieved / r.original
        ax.barh(y, achieved - lo, left=lo, height=0.5, color=COLORS["achieved"])
        right = achieved  # the label goes after the bar, or after the budget mark when that is just beyond it
        if is_bounded(r.budget) and achieved <= r.budget / r.original <= 2.5 * achieved:
            right = r.budget / r.original
        ax.annotate(f"{ratio(achieved)}  ({si(r.achieved, _unit(r))})", (right, y), xytext=(7, 0),
                    textcoords="offset points", va="center", fontsize=8, color=COLORS["text"])
        if is_bounded(r.budget):
            b = r.budget / r.original
            ax.plot([b, b], [y - 0.38, y + 0.38], color=COLORS["budget"], linewidth=3, solid_capstyle="butt")
            ax.annotate(f"budget {ratio(b)}", (b, y + 0.38), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7.5, color=COLORS["budget"])
        else:
            ax.annotate("no budget (unconstrained)", (1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=8, style="italic",
                        color=COLORS["original"])
    ax.axvline(1.0, color=COLORS["original"], linestyle="--", linewidth=1)
    ax.annotate("original", (1.0, len(rows) - 0.45), ha="center", va="bottom", fontsize=7.5, color=COLORS["original"])
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.6, len(rows) - 0.1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.resource for r in reversed(rows)], fontsize=8.5)
    ax.set_xlabel("fraction of the original model (log scale)", fontsize=8.5)
    # Labels at 1, 2 and 5 x 10^k only: the default log-axis minor labels overlap on a narrow range.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}\u00d7"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _unit(row: BudgetRow) -> str:
    return {"MACs": "", "B": "B"}.get(row.unit, row.unit)

