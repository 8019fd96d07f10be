"""What the report shows, as plain rows derived from an export report dict (no formatting here).

Budgets are compared as ratios to the original model (MACs, memory) or to the budget (latency, whose
original value is measured only when the original itself was exported); an infinite budget is no
budget and is never divided by.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgecomp.graph.cost import BYTES_PER_PARAM
from edgecomp.report.fmt import is_bounded


@dataclass
class BudgetRow:
    resource: str
    unit: str  # "MACs", "B", "ms"
    original: float | None
    budget: float | None  # inf or None: no budget
    achieved: float | None
    status: str  # "PASS" | "FAIL" | "INCONCLUSIVE" | "NO BUDGET" | ...
    source: str = ""  # where the budget came from
    note: str = ""

    @property
    def base(self) -> float | None:
        """What the ratios are relative to: the original when known, else the budget."""
        if self.original:
            return self.original
        return self.budget if is_bounded(self.budget) and self.budget else None

    @property
    def base_name(self) -> str:
        return "original" if self.original else "budget"

    def as_ratio(self, value: float | None) -> float | None:
        base = self.base
        return None if value is None or not is_bounded(value) or not base else value / base


def latency_gate(verify: dict) -> dict | None:
    return next((g for g in verify.get("gates", []) if g["name"].startswith("latency")), None)


def gated_percentile(gate: dict | None) -> str:
    """'p90' from a gate named 'latency p90 <= 5 ms' ('latency' when the name says no percentile)."""
    found = re.search(r"\bp(\d+(?:\.\d+)?)\b", gate["name"]) if gate else None
    return f"p{found.group(1)}" if found else "latency"


def _within(achieved: float | None, budget: float | None) -> str:
    if not is_bounded(budget):
        return "NO BUDGET"
    if achieved is None:
        return "SKIPPED"
    return "PASS" if achieved <= budget else "FAIL"


def achieved_costs(report: dict) -> tuple[int, int]:
    """(MACs, params) of the exported model: the compressed one, or the original when compression was skipped."""
    analysis, comp = report["analysis"], report["final"]["compress"]
    return comp.get("macs", analysis["original_macs"]), comp.get("params", analysis["original_params"])


def budget_rows(report: dict) -> list[BudgetRow]:
    """MACs, parameter memory and (when gated) latency: original, budget, achieved, within or not."""
    analysis, final = report["analysis"], report["final"]
    precision = analysis.get("precision", report.get("precision", "fp32"))
    macs, params = achieved_costs(report)
    memory = params * BYTES_PER_PARAM.get(precision, 4)
    mac_note = ""
    round_budget = final["compress"].get("mac_budget")
    if is_bounded(round_budget) and round_budget != analysis["mac_budget"]:
        mac_note = f"round {final['round']} aimed at {round_budget:,.0f} MACs to meet the latency budget"
    rows = [
        BudgetRow("MACs per sample", "MACs", analysis["original_macs"], analysis["mac_budget"], macs,
                  _within(macs, analysis["mac_budget"]), analysis.get("mac_budget_source", ""), mac_note),
        BudgetRow(f"Parameter memory ({precision})", "B", analysis["original_memory_bytes"], analysis["memory_budget"],
                  memory, _within(memory, analysis["memory_budget"]), analysis.get("memory_budget_source", "")),
    ]
    gate = latency_gate(final["verify"])
    if gate is not None:
        first = report["rounds"][0]
        original = None
        if first["compress"].get("skipped"):  # round 1 measured the original model itself
            original = (latency_gate(first["verify"]) or {}).get("measured")
        rows.append(BudgetRow(f"Latency {gated_percentile(gate)} (upper bound, as gated)", "ms", original,
                              gate["threshold"], gate["measured"], gate["status"], "latency gate"))
    return rows


@dataclass
class AccuracyRow:
    label: str
    top1: float | None
    baseline: float | None  # what the delta is against
    where: str
    note: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.top1 is None or self.baseline is None else self.top1 - self.baseline


def accuracy_rows(report: dict) -> list[AccuracyRow]:
    """Original, compressed before and after fine-tuning (host, PyTorch), then the artifact on the target."""
    final = report["final"]
    comp, verify = final["compress"], final["verify"]
    rows: list[AccuracyRow] = []
    host = f"host, PyTorch, {report.get('eval_data') or 'evaluation data'}"
    original = comp.get("original_accuracy")
    if original is not None:
        rows.append(AccuracyRow("Original model", original, None, host))
    if comp.get("accuracy_before_finetune") is not None:
        rows.append(AccuracyRow("Compressed, before fine-tuning", comp["accuracy_before_finetune"], original,
                                host))
    if comp.get("accuracy") is not None and not comp.get("skipped"):
        epochs = report.get("finetune_epochs")
        tuned = epochs is None or epochs > 0
        label = "Compressed, after fine-tuning" if tuned else "Compressed (no fine-tuning)"
        note = f"{epochs:g} epochs" if tuned and epochs is not None else ("--finetune-epochs 0" if not tuned else "")
        if tuned or comp.get("accuracy_before_finetune") is None:
            rows.append(AccuracyRow(label, comp["accuracy"], original, host, note))
    reference = ((verify.get("reference") or {}).get("accuracy") or {}).get("top1")
    target = (verify.get("accuracy") or {})
    samples = target.get("samples")
    on = f"{samples} samples" if samples else "the target's samples"
    if reference is not None:
        rows.append(AccuracyRow("Original, on the same samples", reference, None, f"host, PyTorch, {on}"))
    if target.get("top1") is not None:
        ci = target.get("top1_ci95")
        note = f"95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%" if ci else ""
        where = "target (stand-in: this host)" if report.get("stand_in") else "target"
        rows.append(AccuracyRow("Exported artifact", target["top1"], reference, f"{where}, {on}", note))
    return rows


@dataclass
class LayerRow:
    name: str
    shape: str
    rank: int | None
    max_rank: int | None
    break_even_rank: int | None
    factored: bool
    original_macs: int
    macs: int
    original_params: int
    params: int
    energy: float | None
    scheme: str | None = None  # the layer's scheme (report rows that record it); "dense": left whole by auto
    pair: tuple[int, int] | None = None  # a Tucker-2 layer's (r1, r2)
    rank_before_rounding: int | list[int] | None = None  # the method's rank (or [r1, r2]) when rounding changed it

    @property
    def rank_text(self) -> str:
        """'20 / 160'; '(r1, r2) = (4, 6)' for a Tucker-2 pair; 'full (160)' when not factored; '' without a rank;
        ', rounded from 23' (or '(5, 7)') appended when rank rounding changed it."""
        if self.rank is None:
            return ""
        if not self.factored:
            return f"full ({self.max_rank})"
        before = self.rank_before_rounding
        if isinstance(before, list):
            before = f"({before[0]}, {before[1]})"
        rounded = f", rounded from {before}" if before is not None else ""
        if self.pair:
            return f"(r1, r2) = ({self.pair[0]}, {self.pair[1]}){rounded}"
        return f"{self.rank} / {self.max_rank}{rounded}"


def has_schemes(rows: list[LayerRow]) -> bool:
    """True when the rows record their schemes (reports written since --scheme auto): tables show them."""
    return any(row.scheme for row in rows)


def describe_shape(layer: dict) -> str:
    """'conv 5x5, 1->32' / 'linear 3136->128' from the layer's kind and weight shape; '' when unknown."""
    shape = layer.get("shape")
    if not shape:
        return ""
    if len(shape) == 4:
        f, c, kh, kw = shape
        return f"conv {kh}\u00d7{kw}, {c}\u2192{f}"
    if len(shape) == 2:
        f, c = shape
        return f"linear {c}\u2192{f}"
    return "\u00d7".join(str(d) for d in shape)


def _rounded_from(row: dict) -> int | list[int] | None:
    """The rank (or Tucker-2 [r1, r2]) the method chose, when rank rounding changed it; else None."""
    before = row.get("rank_before_rounding")
    now = [row["r1"], row["r2"]] if "r1" in row and "r2" in row else row.get("rank")
    return None if before is None or before == now else before


def layer_rows(report: dict) -> list[LayerRow]:
    """One row per decomposable layer, then 'other layers' (not decomposable) when they cost anything."""
    analysis, comp = report["analysis"], report["final"]["compress"]
    layers = comp.get("layers") or []
    rows = [LayerRow(row["name"], describe_shape(row), row.get("rank"), row.get("max_rank"), row.get("break_even_rank"),
                     bool(row.get("factored")), row["original_macs"], row["macs"], row["original_params"], row["params"],
                     row.get("energy"), row.get("scheme"),
                     (int(row["r1"]), int(row["r2"])) if "r1" in row and "r2" in row else None,
                     _rounded_from(row)) for row in layers]
    macs, params = achieved_costs(report)
    other_macs = analysis["original_macs"] - sum(r.original_macs for r in rows)
    other_params = analysis["original_params"] - sum(r.original_params for r in rows)
    if rows and (other_macs > 0 or other_params > 0):
        rows.append(LayerRow("other layers (not decomposable)", "", None, None, None, False, other_macs,
                             macs - sum(r.macs for r in rows), other_params, params - sum(r.params for r in rows), None))
    return rows
