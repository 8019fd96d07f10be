"""report.json and the per-layer cost-reduction chart (like COBLA's Fig. 5) of a compress run."""

from __future__ import annotations

from pathlib import Path

from edgecomp import __version__
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
        "timings": result.timings,
    }
    report.update(extra or {})
    return report


def plot_layer_costs(layers: list[dict], path: str | Path, title: str) -> Path:
    """Bar chart: per-layer MACs before and after compression (log scale), ranks annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in layers]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4.0))
    ax.bar([i - 0.2 for i in x], [row["original_macs"] for row in layers], width=0.4, label="original", color="#9aa5b1")
    ax.bar([i + 0.2 for i in x], [row["macs"] for row in layers], width=0.4, label="compressed", color="#1f77b4")
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("MACs per sample")
    ax.set_title(title, fontsize=9)
    for i, row in enumerate(layers):
        ax.annotate(f"r={row['rank']}" if row["factored"] else "full", (i + 0.2, row["macs"]), fontsize=6,
                    ha="center", va="bottom", rotation=90)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
