"""A Markdown summary sized for a CI job summary ($GITHUB_STEP_SUMMARY): verdict, gate table,
latency statistics with their context, accuracy, environment and notes."""

from __future__ import annotations

import math

from edgecomp.runtime.gates import FAIL, INCONCLUSIVE, PASS, SKIPPED, GateResult
from edgecomp.runtime.report import ProfileReport

ICONS = {PASS: "✅ PASS", FAIL: "❌ FAIL", INCONCLUSIVE: "⚠️ INCONCLUSIVE", SKIPPED: "⏭️ SKIPPED", "ERROR": "💥 ERROR"}


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isinf(v)):
        return "n/a"
    return f"{v:.4g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def gate_table(gates: list[GateResult]) -> list[str]:
    lines = ["| Gate | Status | Measured | Threshold | Detail |", "|---|---|---|---|---|"]
    for g in gates:
        measured = "" if g.measured is None else f"{_ms(g.measured)} {g.unit}"
        threshold = "" if g.threshold is None else f"{g.threshold:g} {g.unit}"
        lines.append(f"| {_cell(g.name)} | {ICONS.get(g.status, g.status)} | {measured} | {threshold} | "
                     f"{_cell(g.message)} |")
    return lines


def latency_section(report: ProfileReport) -> list[str]:
    s = report.latency
    lines = [
        f"### Latency (ms) — {report.context_line()}",
        "",
        "| n | min | mean (95% CI) | std | p50 | p90 | p95 | p99 | max | CV | robust CV | throughput/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {s.n} | {_ms(s.min)} | {_ms(s.mean)} ({_ms(s.mean_ci_low)}–{_ms(s.mean_ci_high)}) | {_ms(s.std)} | "
        f"{_ms(s.p50)} | {_ms(s.p90)} | {_ms(s.p95)} | {_ms(s.p99)} | {_ms(s.max)} | "
        f"{s.cv:.3f} | {s.robust_cv:.3f}{' ⚠️ unstable' if s.unstable else ''} | {s.throughput_per_s:.4g} |",
        "",
        "| percentile | estimate | two-sided CI | one-sided bounds | samples (min) |",
        "|---|---|---|---|---|",
    ]
    for p in s.percentiles.values():
        lines.append(
            f"| p{p.percentile:g} | {_ms(p.value)} | {_ms(p.ci_low)}–{_ms(p.ci_high)} ({p.interval_level:.0%}) | "
            f"{_ms(p.lower_bound)}–{_ms(p.upper_bound)} ({p.confidence:.0%}) | {s.n} ({p.min_samples}) |"
        )
    lines.append("")
    lines.append(f"Robust CV (1.4826 MAD/median) threshold {s.cv_threshold:g}. Percentile bounds are distribution-free "
                 "order statistics; the latency gate compares the one-sided upper bound with the budget, widened "
                 "by the spread of the percentile over time blocks when the run is unstable (see the gate's detail).")
    return lines


def accuracy_section(report: ProfileReport) -> list[str]:
    lines: list[str] = []
    if report.accuracy and report.accuracy.get("top1") is None:  # a user metric (Python API)
        ref = (report.reference or {}).get("accuracy") or {}
        lines += ["### Accuracy", "", "| model | samples | metric |", "|---|---|---|",
                  f"| artifact on target | {report.accuracy['samples']} | {report.accuracy['metric']:.6g} |"]
        if ref.get("metric") is not None:
            lines.append(f"| reference ({_cell(report.reference['model'])}) | {ref['samples']} | {ref['metric']:.6g} |")
        lines.append("")
    elif report.accuracy:
        a = report.accuracy
        top5 = "n/a" if a.get("top5") is None else f"{a['top5']:.4f}"
        lines += ["### Accuracy", "", "| model | samples | top-1 (95% CI) | top-5 |", "|---|---|---|---|",
                  f"| artifact on target | {a['samples']} | {a['top1']:.4f} ({a['top1_ci95'][0]:.4f}–"
                  f"{a['top1_ci95'][1]:.4f}) | {top5} |"]
        ref = (report.reference or {}).get("accuracy")
        if ref:
            rtop5 = "n/a" if ref.get("top5") is None else f"{ref['top5']:.4f}"
            lines.append(f"| reference ({_cell(report.reference['model'])}) | {ref['samples']} | {ref['top1']:.4f} "
                         f"({ref['top1_ci95'][0]:.4f}–{ref['top1_ci95'][1]:.4f}) | {rtop5} |")
        lines.append("")
    if report.agreement:
        g = report.agreement
        lines += [f"Agreement with the reference: top-1 {g['top1_agreement']:.4f} over {g['samples']} samples, "
                  f"max |error| {g['max_abs_error']:.3g}, mean |error| {g['mean_abs_error']:.3g}", ""]
    if report.compare is not None:
        lines += ["### Output comparison", "",
                  f"atol {report.compare.atol:g}, rtol {report.compare.rtol:g}", "",
                  "| candidate | reference | max abs | mean abs | p99 abs | max rel | p99 rel | mismatched | ok |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in report.compare.pairs:
            lines.append(f"| {_cell(p.candidate)} | {_cell(p.reference)} | {p.max_abs:.3g} | {p.mean_abs:.3g} | "
                         f"{p.p99_abs:.3g} | {p.max_rel:.3g} | {p.p99_rel:.3g} | {p.mismatch_fraction:.2%} | "
                         f"{'✅' if p.passed else '❌'} |")
        lines.append("")
    return lines


def environment_section(report: ProfileReport) -> list[str]:
    env = report.target.get("environment", {})
    rt = report.runtime
    mem = report.memory
    rss = mem.get("peak_rss_bytes")
    gpu = mem.get("gpu_memory_used_bytes")
    art = report.artifact
    rows = [
        ("artifact", f"`{art['path']}` ({art['kind']}, {art['size_bytes']} bytes, sha256 {art['sha256'][:12]}…)"),
        ("device profile", report.device["name"]),
        ("target", report.target["url"] + (" — **stand-in for the device**" if report.target.get("stand_in") else "")),
        ("runtime", f"{rt.get('name')} {rt.get('version')}"),
        ("providers used", ", ".join(rt.get("providers_used") or []) + (" (overridden)" if rt.get("providers_overridden") else "")),
        ("precision", str(rt.get("precision"))),
        ("threads / graph opt", f"{rt.get('threads') if rt.get('threads') is not None else 'default'} / "
                                f"{rt.get('graph_optimization_level')}"),
        ("inputs", f"{report.inputs['source']} ({report.inputs['samples']} samples, batch {report.settings['batch_size']})"),
        ("harness", f"warm-up {report.settings['warmup_s']:g} s, ≥{report.settings['iterations']} iterations and "
                    f"≥{report.settings['min_duration_s']:g} s (stopped by {report.timing.get('stopped_by')})"),
        ("peak RSS", "n/a" if rss is None else f"{rss / 2**20:.1f} MiB"),
        ("GPU memory", "n/a" if gpu is None else f"{gpu / 2**20:.1f} MiB"),
        ("target platform", f"{env.get('platform', '?')}, Python {env.get('python', '?')}"),
    ]
    lines = ["### Environment", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows]
    if report.notes:
        lines += ["", "Notes:"] + [f"- {_cell(n)}" for n in report.notes]
    return lines


def render_markdown(report: ProfileReport, gates: list[GateResult] | None = None, verdict: str | None = None,
                    title: str = "edgecomp") -> str:
    lines: list[str] = []
    if gates is not None:
        lines += [f"## {title} verify: {ICONS.get(verdict or '', verdict or '')}", ""]
        lines += gate_table(gates) + [""]
    else:
        lines += [f"## {title} profile: {report.device['name']}", ""]
    lines += latency_section(report) + [""]
    lines += accuracy_section(report)
    lines += environment_section(report)
    return "\n".join(lines) + "\n"


def render_error_markdown(message: str, title: str = "edgecomp") -> str:
    return f"## {title} verify: {ICONS['ERROR']}\n\nCould not run: {_cell(message)}\n"
