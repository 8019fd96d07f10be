"""The one report of an export run: report.json (machine), report.md (CI summary), report.html (people).

The HTML page and its charts live in edgecomp.report; this module assembles the report dict and the
Markdown summary and writes the three files. report.json carries its format version (edgecomp.formats,
kind "export-report").
"""

from __future__ import annotations

from pathlib import Path

from edgecomp import __version__
from edgecomp.formats import stamp
from edgecomp.io import write_json, write_text
from edgecomp.report import budget_rows, layer_rows, render_page
from edgecomp.report.facts import has_schemes
from edgecomp.report.latency import latency_markdown
from edgecomp.report.fmt import UNBOUNDED, is_bounded, ratio, si


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_value(row, value) -> str:
    """'0.30x (10.9 M MACs)': the ratio to the original (or budget), then the absolute value."""
    if value is None:
        return "-"
    if not is_bounded(value):
        return UNBOUNDED
    unit = {"MACs": " MACs", "B": "B"}.get(row.unit, " " + row.unit)
    absolute = si(value, unit).replace("  ", " ")
    r = row.as_ratio(value)
    return absolute if r is None else f"{ratio(r)} {row.base_name} ({absolute})"


def markdown(report: dict) -> str:
    final = report["final"]
    lines = [
        f"# edgecomp export: {_cell(report['model'])} on {report['device']}",
        "",
        f"**Verdict: {report['verdict']}** (exit code {report['exit_code']}); measured on {report['measured_on']}.",
        "",
        "| round | compressed | MACs | params | accuracy | latency p50 (ms) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        comp, ver = r["compress"], r["verify"]
        acc = (ver.get("accuracy") or {}).get("top1")
        lines.append(
            f"| {r['round']} | {'no (fits)' if comp.get('skipped') else comp.get('method')} | "
            f"{comp.get('macs', report['analysis']['original_macs']):,} | {comp.get('params', report['analysis']['original_params']):,} | "
            f"{'-' if acc is None else f'{acc:.4f}'} | {ver['latency'].get('p50') or 0:.4f} | {ver['verdict']} |"
        )
    lines += ["", "| budget | original | budget | achieved | status |", "|---|---|---|---|---|"]
    for row in budget_rows(report):
        lines.append(f"| {row.resource} | {_md_value(row, row.original)} | {_md_value(row, row.budget)} | "
                     f"{_md_value(row, row.achieved)} | {row.status} |")
    layers = layer_rows(report)
    if layers:
        # the scheme column: what each layer was factored by (under --scheme auto, its own choice)
        schemes = has_schemes(layers)
        lines += ["", f"| layer | shape |{' scheme |' if schemes else ''} rank / max | MACs before -> after | "
                  "params before -> after |", "|---|---|---|---|---|" + ("---|" if schemes else "")]
        for row in layers:
            scheme = f" {row.scheme if row.factored else ''} |" if schemes else ""
            lines.append(f"| {_cell(row.name)} | {row.shape} |{scheme} {row.rank_text} | {si(row.original_macs)} -> "
                         f"{si(row.macs)} | {si(row.original_params)} -> {si(row.params)} |")
    lines += latency_markdown(report)
    lines += ["", "| gate | status | measured | threshold | message |", "|---|---|---|---|---|"]
    for g in final["verify"]["gates"]:
        lines.append(f"| {_cell(g['name'])} | {g['status']} | {g['measured']} | {g['threshold']} | {_cell(g['message'])} |")
    lines += ["", f"Artifact: `{final['export']['artifact']}`"]
    if final["export"].get("trtexec_script"):
        lines.append(f"TensorRT engine to build on the device: `{final['export']['trtexec_script']}`")
    for note in report["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def write_summary(req, outdir: Path, analysis: dict, history: list[dict], stages: list[dict]) -> dict:
    final = history[-1]
    verify = final["verify"]
    notes = [req.settings_note] if req.settings_note else []
    notes += [n for r in history for n in ([r["note"]] if r.get("note") else [])]
    notes += final["export"].get("notes", [])
    if final["export"].get("stand_in"):
        notes.append(f"measured on this host as a STAND-IN for {req.profile.name}: latency numbers describe this "
                     "host, not the device")
    if final["export"].get("engine_error"):
        notes.append(final["export"]["engine_error"])
    if (final.get("versus_original") or {}).get("slower"):
        notes.append(final["versus_original"]["message"])
    best = min(history, key=lambda r: r["verify"]["latency"].get("p50") or float("inf"))
    report = {
        "edgecomp_version": __version__,
        "model": req.model,
        "weights": req.weights,
        "device": req.profile.name,
        "target": req.target_url(),
        "measured_on": verify["context"],
        "stand_in": bool(final["export"].get("stand_in")),
        "precision": req.precision,
        "method": req.method,
        "cost": req.cost,
        "cost_choice": getattr(req, "cost_choice", None),  # {"asked", "cost", "why"}: what --cost auto chose
        "finetune_epochs": req.finetune_epochs if req.data else 0.0,
        "cobla_settings": req.cobla,
        "settings_note": req.settings_note,
        "eval_data": req.eval_data,
        "analysis": analysis,
        "rounds": history,
        "best_latency_round": best["round"],
        "final": final,
        "verdict": verify["verdict"],
        "exit_code": verify["exit_code"],
        "notes": notes,
        "stages": stages,
    }
    report = stamp(report, "export-report")
    write_json(outdir / "report.json", report)
    write_text(outdir / "report.md", markdown(report))
    write_text(outdir / "report.html", render_page(report, draw_charts(report, outdir)))
    report["files"] = {"json": str(outdir / "report.json"), "markdown": str(outdir / "report.md"),
                       "html": str(outdir / "report.html")}
    return report


def draw_charts(report: dict, outdir: Path) -> dict[str, Path | None]:
    """The page's PNGs: rank allocation (when compressed), costs vs budgets, the latency histogram."""
    from edgecomp.compression.report import plot_layer_costs
    from edgecomp.report.charts import budget_chart

    analysis, comp = report["analysis"], report["final"]["compress"]
    ranks = None
    if comp.get("layers"):
        ranks = plot_layer_costs(comp["layers"], outdir / "ranks.png",
                                 f"{report['model']} - {comp.get('method')}: "
                                 f"{comp['macs'] / analysis['original_macs']:.2f}x MACs, "
                                 f"{comp['params'] / analysis['original_params']:.2f}x params")
    histogram = report["final"]["verify"].get("files", {}).get("histogram")
    return {"ranks": ranks, "budgets": budget_chart(budget_rows(report), outdir / "budgets.png"),
            "latency": Path(histogram) if histogram else None}
