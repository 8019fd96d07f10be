"""report.json and the per-layer cost-reduction chart (like COBLA's Fig. 5) of a compress run.

report.json carries its format version (edgecomp.formats, kind "compress-report"); readers use
edgecomp.formats.read_optional(path, "compress-report").
"""

from __future__ import annotations

from pathlib import Path

from edgecomp import __version__
from edgecomp.formats import stamp
from edgecomp.graph.cost import BYTES_PER_PARAM
from edgecomp.io import atomic_path


def build_report(result, *, method: str, scheme: str, budgets, original_cost, accuracy, original_accuracy,
                 model_spec: str, weights: str | None, input_shape, device: str | None, extra: dict | None = None) -> dict:
    selection = result.selection
    info = {k: v for k, v in selection.info.items() if k != "sqp_history"}
    original_macs, original_params = original_cost
    report = {
        "edgecomp_version": __version__,
        "model": model_spec,
        "weights": weights,
        "input_shape": list(input_shape),
        "device": device,
        "method": method,
        "scheme": scheme,
        "precision": budgets.precision,
        "original_macs": int(original_macs),
        "original_params": int(original_params),
        "macs": int(result.macs),
        "params": int(result.params),
        "mac_ratio": result.macs / original_macs,
        "param_ratio": result.params / original_params,
        "mac_budget": budgets.macs,
        "memory_budget": budgets.memory_bytes,
        "param_budget": budgets.params,
        "mac_budget_source": budgets.mac_source,
        "memory_budget_source": budgets.memory_source,
        "memory_bytes": result.params * BYTES_PER_PARAM[budgets.precision],
        "budgets_enforced": selection.enforces_budgets,
        "within_budgets": result.macs <= budgets.macs and result.params <= budgets.params,
        "accuracy": accuracy,
        "original_accuracy": original_accuracy,
        "layers": result.layers,
        "selection_info": info,
        "sqp_history": selection.info.get("sqp_history"),
        # COBLA's --time-budget: {"seconds", "hit", "stage": "sqp" | "rounding" | None, "elapsed_s"}; None without one
        "time_budget": _time_budget(info),
        "timings": result.timings,
    }
    report.update(extra or {})
    report["layers"] = _with_rank_rounding(result.layers, info.get("rank_rounding"))
    multiple = report.get("rank_multiple")
    if isinstance(multiple, dict) and multiple.get("multiple", 1) > 1 and not info.get("rank_rounding"):
        report["rank_multiple"] = {**multiple, "applied": False,
                                   "note": f"ranks not rounded: --method {method} chooses them with its weights"}
    elif isinstance(multiple, dict):
        report["rank_multiple"] = {**multiple, "applied": multiple.get("multiple", 1) > 1}
    return stamp(report, "compress-report")


def _with_rank_rounding(layers: list[dict], rounding: dict | None) -> list[dict]:
    """The layer rows, each rounded layer's with "rank_before_rounding" (its rank, or Tucker-2 [r1, r2],
    as the method chose it) and, when it could not be rounded, "rank_rounding_note"."""
    if not rounding:
        return layers
    by_name = {r["name"]: r for r in rounding.get("layers", [])}
    out = []
    for row in layers:
        record = by_name.get(row["name"])
        if record is None:
            out.append(row)
            continue
        extra = {"rank_before_rounding": record["before"]}
        if record.get("note"):
            extra["rank_rounding_note"] = record["note"]
        out.append({**row, **extra})
    return out


def _time_budget(info: dict) -> dict | None:
    """The budget record when a budget was set, with a sentence saying what it cut short (if anything)."""
    budget = info.get("time_budget")
    if not budget or budget.get("seconds") is None:
        return None
    if budget.get("hit"):
        where = "the SQP (ranks rounded from its last iterate)" if budget["stage"] == "sqp" else \
            "rounding (the best candidate scored so far was kept)"
        message = f"the time budget of {budget['seconds']:g} s cut COBLA short during {where}"
    else:
        message = f"COBLA finished within its time budget of {budget['seconds']:g} s"
    return {**budget, "message": message}


def plot_layer_costs(layers: list[dict], path: str | Path, title: str) -> Path:
    """Rank allocation per layer: top, the rank kept as a share of the layer's maximum rank (red tick:
    break-even rank); bottom, MACs before and after compression (log scale, so small layers stay visible)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [row["name"].replace("$", r"\$") for row in layers]  # '$' would start matplotlib mathtext
    x = list(range(len(names)))
    crowded = len(names) > 16
    fig = Figure(figsize=(min(14.0, max(7.0, 0.3 * len(names) + 2)), 5.6 if crowded else 5.2), dpi=110)
    top, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    shares = [min(row["rank"], row["max_rank"]) / row["max_rank"] if row["factored"] else 1.0 for row in layers]
    top.bar(x, shares, width=0.6, color=["#0969da" if row["factored"] else "#8c959f" for row in layers])
    for i, row in enumerate(layers):
        if row["break_even_rank"] <= row["max_rank"]:
            be = row["break_even_rank"] / row["max_rank"]
            top.plot([i - 0.38, i + 0.38], [be, be], color="#cf222e", linewidth=2)
        label = f"{row['rank']}/{row['max_rank']}" if row["factored"] else "full"
        top.annotate(label, (i, shares[i]), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                     fontsize=6 if crowded else 7.5, rotation=90 if crowded else 0)
    top.set_ylim(0, 1.35 if crowded else 1.18)
    top.set_ylabel("rank / max rank", fontsize=8.5)
    top.set_title(title.replace("$", r"\$"), fontsize=9, loc="left")
    top.plot([], [], color="#cf222e", linewidth=2, label="break-even rank")
    top.legend(fontsize=7.5, loc="lower right", frameon=False, bbox_to_anchor=(1.0, 1.0), borderaxespad=0.1)
    ax.bar([i - 0.2 for i in x], [row["original_macs"] for row in layers], width=0.4, label="original", color="#8c959f")
    ax.bar([i + 0.2 for i in x], [row["macs"] for row in layers], width=0.4, label="compressed", color="#0969da")
    ax.set_yscale("log")
    ax.set_xticks(x)
    rotate = 90 if crowded else (30 if len(names) > 8 or max(map(len, names), default=0) > 10 else 0)
    ax.set_xticklabels(names, rotation=rotate, ha="right" if rotate == 30 else "center", fontsize=6.5 if crowded else 7.5)
    ax.set_ylabel("MACs per sample (log)", fontsize=8.5)
    ax.legend(fontsize=7.5, frameon=False)
    for a in (top, ax):
        a.tick_params(which="both", labelsize=7.5)
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
