"""The one report of an export run: report.json (machine), report.md (CI summary), report.html (plots)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from edgecomp import __version__
from edgecomp.io import atomic_path, write_json, write_text


def _plot(path: Path, draw) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    draw(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _budget_chart(path: Path, analysis: dict, final: dict) -> Path:
    def draw(ax):
        macs = [analysis["original_macs"], final.get("macs", analysis["original_macs"])]
        ax.bar(["original", "exported"], macs, color=["#9aa5b1", "#1f77b4"])
        if analysis["mac_budget"] != float("inf"):
            ax.axhline(analysis["mac_budget"], color="red", linestyle="--", label="device MAC budget")
        if final.get("mac_budget") and final["mac_budget"] != analysis["mac_budget"]:
            ax.axhline(final["mac_budget"], color="orange", linestyle=":", label="last round's MAC budget")
        ax.set_ylabel("MACs per sample")
        ax.set_title("MACs vs budget", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)

    return _plot(path, draw)


def _accuracy_chart(path: Path, points: dict[str, float]) -> Path:
    def draw(ax):
        names, values = list(points), [100 * v for v in points.values()]
        ax.bar(names, values, color="#2ca02c")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.2f}%", (i, v), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(max(0.0, min(values) - 10), 100)
        ax.set_ylabel("top-1 (%)")
        ax.set_title("accuracy before / after", fontsize=9)

    return _plot(path, draw)


def _img(path: str | Path | None) -> str:
    if not path or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def _accuracy_points(final_round: dict) -> dict[str, float]:
    comp, ver = final_round.get("compress", {}), final_round.get("verify", {})
    points = {}
    if comp.get("original_accuracy") is not None:
        points["original (PyTorch)"] = comp["original_accuracy"]
    if comp.get("accuracy_before_finetune") is not None:
        points["compressed"] = comp["accuracy_before_finetune"]
    if comp.get("accuracy") is not None and comp.get("accuracy") != comp.get("accuracy_before_finetune"):
        points["fine-tuned"] = comp["accuracy"]
    acc = (ver.get("accuracy") or {}).get("top1")
    if acc is not None:
        points["on target"] = acc
    ref = (ver.get("reference") or {}).get("top1")
    if ref is not None and "original (PyTorch)" not in points:
        points["reference"] = ref
    return points


def markdown(report: dict) -> str:
    final = report["final"]
    lines = [
        f"# edgecomp export: {report['model']} on {report['device']}",
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
    lines += ["", "| gate | status | measured | threshold | message |", "|---|---|---|---|---|"]
    for g in final["verify"]["gates"]:
        lines.append(f"| {g['name']} | {g['status']} | {g['measured']} | {g['threshold']} | {g['message']} |")
    lines += ["", f"Artifact: `{final['export']['artifact']}`"]
    if final["export"].get("trtexec_script"):
        lines.append(f"TensorRT engine to build on the device: `{final['export']['trtexec_script']}`")
    for note in report["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def html_page(report: dict, images: dict[str, Path | None]) -> str:
    md = html.escape(markdown(report))
    sections = "".join(f"<h2>{html.escape(title)}</h2>{_img(path)}" for title, path in images.items() if path)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgecomp report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f6f8fa;padding:1em;"
        "white-space:pre-wrap}img{max-width:100%}</style></head><body>"
        f"<h1>edgecomp export: {html.escape(str(report['model']))} on {html.escape(report['device'])}</h1>"
        f"<p><b>{html.escape(report['verdict'])}</b> (exit code {report['exit_code']}), measured on "
        f"{html.escape(report['measured_on'])}</p>{sections}<h2>Summary</h2><pre>{md}</pre></body></html>"
    )


def write_summary(req, outdir: Path, analysis: dict, history: list[dict], stages: list[dict]) -> dict:
    final = history[-1]
    verify = final["verify"]
    notes = [n for r in history for n in ([r["note"]] if r.get("note") else [])]
    notes += final["export"].get("notes", [])
    if final["export"].get("stand_in"):
        notes.append(f"measured on this host as a STAND-IN for {req.profile.name}: latency numbers describe this "
                     "host, not the device")
    if final["export"].get("engine_error"):
        notes.append(final["export"]["engine_error"])
    best = min(history, key=lambda r: r["verify"]["latency"].get("p50") or float("inf"))
    report = {
        "edgecomp_version": __version__,
        "model": req.model,
        "weights": req.weights,
        "device": req.profile.name,
        "target": req.target or req.profile.target.url or "local",
        "measured_on": verify["context"],
        "stand_in": bool(final["export"].get("stand_in")),
        "precision": req.precision,
        "method": req.method,
        "cost": req.cost,
        "analysis": analysis,
        "rounds": history,
        "best_latency_round": best["round"],
        "final": final,
        "verdict": verify["verdict"],
        "exit_code": verify["exit_code"],
        "notes": notes,
        "stages": stages,
    }
    comp = final["compress"]
    images = {
        "Per-layer rank allocation": (Path(comp["outdir"]) / "ranks.png") if comp.get("outdir") else None,
        "MACs and budget": _budget_chart(outdir / "budgets.png", analysis, comp),
        "Latency histogram (with budget)": Path(verify["files"]["histogram"]),
    }
    points = _accuracy_points(final)
    if points:
        images["Accuracy before / after"] = _accuracy_chart(outdir / "accuracy.png", points)
    write_json(outdir / "report.json", report)
    write_text(outdir / "report.md", markdown(report))
    write_text(outdir / "report.html", html_page(report, images))
    report["files"] = {"json": str(outdir / "report.json"), "markdown": str(outdir / "report.md"),
                       "html": str(outdir / "report.html")}
    return report
