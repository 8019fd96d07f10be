"""The latency side of an export report: which compute cost was budgeted and why, the per-layer latency
table (dense ms, factored ms, what was built), the predicted whole-model latency against the measured
one, and the rank rounding. Plain rows here; report.md (edgecomp.pipeline.summary) and report.html
(edgecomp.report.html) render them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecomp.report.fmt import ms


@dataclass
class LatencyLayerRow:
    name: str
    dense_ms: float
    rank: int | None  # the built rank; None: left dense
    factored_ms: float | None  # the fit at `rank`
    chosen: str  # "factored" | "dense"
    faster: bool | None
    why: str
    rank_before_rounding: int | None = None  # the method's rank, when rounding changed it

    @property
    def rank_text(self) -> str:
        if self.rank is None:
            return "-"
        if self.rank_before_rounding is not None and self.rank_before_rounding != self.rank:
            return f"{self.rank} (from {self.rank_before_rounding})"
        return str(self.rank)


def cost_text(report: dict) -> str:
    """'latency (auto: x86-host has a latency budget of 10 ms and ...)'; the bare cost for older reports."""
    choice = report.get("cost_choice") or {}
    cost = choice.get("cost") or report.get("cost") or "macs"
    return f"{cost} ({choice['why']})" if choice.get("why") else str(cost)


def latency_layer_rows(report: dict) -> list[LatencyLayerRow]:
    """One row per layer the final round's latency table measured (compress.latency_layers); [] without one."""
    comp = report["final"]["compress"]
    before = {row["name"]: row.get("rank_before_rounding") for row in comp.get("layers") or []}
    return [LatencyLayerRow(row["name"], float(row["dense_ms"]), row.get("rank"), row.get("factored_ms"),
                            row.get("chosen", "dense"), row.get("faster"), row.get("why", ""),
                            before.get(row["name"]) if isinstance(before.get(row["name"]), int) else None)
            for row in comp.get("latency_layers") or []]


def predicted_vs_measured(report: dict) -> tuple[float, float | None] | None:
    """(predicted, measured p50) of the final model in ms when its ranks were selected under latency:
    the table's fit (fixed + each layer's fitted latency) against the whole model timed by verify."""
    comp = report["final"]["compress"]
    predicted = comp.get("predicted_latency_ms")
    if predicted is None or comp.get("cost") != "latency":
        return None
    return float(predicted), (report["final"]["verify"].get("latency") or {}).get("p50")


def rounding_text(report: dict) -> str | None:
    """'ranks rounded down to multiples of 8 (profile jetson-orin-nano (tensorrt, fp16))', or why not; None
    without a rank multiple."""
    multiple = report["final"]["compress"].get("rank_multiple")
    if not isinstance(multiple, dict) or multiple.get("multiple", 1) <= 1:
        return None
    if not multiple.get("applied", True):
        return f"rank multiple {multiple['multiple']} ({multiple.get('source')}): {multiple.get('note', 'not applied')}"
    return f"ranks rounded down to multiples of {multiple['multiple']} ({multiple.get('source')})"


def versus_text(report: dict) -> str | None:
    """The artifact against the original, timed together on the target (edgecomp.pipeline.versus_original)."""
    versus = report["final"].get("versus_original")
    return versus["message"] if versus else None


def timing_text(report: dict) -> str | None:
    """'in-context (auto: ...)': how the per-layer table timed factored layers; None without one."""
    timing = report["final"]["compress"].get("layer_timing") or {}
    return f"{timing['mode']} ({timing.get('why', '')})" if timing.get("mode") else None


def latency_markdown(report: dict) -> list[str]:
    """report.md's lines: the cost used and why, rounding, predicted vs measured, the per-layer table."""
    lines = ["", f"Compute cost budgeted: {cost_text(report)}."]
    rounding = rounding_text(report)
    if rounding:
        lines.append(f"Rank rounding: {rounding}.")
    pair = predicted_vs_measured(report)
    if pair is not None:
        lines.append(f"Whole-model latency: predicted {ms(pair[0])} by the per-layer fit, measured p50 "
                     f"{ms(pair[1])}.")
    versus = versus_text(report)
    if versus:
        lines.append(f"Against the original, timed together on the target: {versus}.")
    rows = latency_layer_rows(report)
    timing = timing_text(report)
    if rows and timing:
        lines.append(f"Per-layer timings: {timing}.")
    if rows:
        lines += ["", "| layer | dense (ms) | rank | factored (ms) | chosen | why |", "|---|---|---|---|---|---|"]
        for row in rows:
            factored = "-" if row.factored_ms is None else f"{row.factored_ms:.4g}"
            why = row.why.replace("|", "\\|")
            lines.append(f"| {row.name} | {row.dense_ms:.4g} | {row.rank_text} | {factored} | {row.chosen} | {why} |")
    return lines
