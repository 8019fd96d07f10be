"""report.html: one self-contained page (inline CSS, images as data: URIs, no external resource).

Sections: verdict banner with the headline numbers, budgets (original / budget / achieved as ratios),
accuracy (original, compressed before and after fine-tuning, artifact on the target), per-layer ranks,
latency, gates, notes and files. Every string that comes from the user or the run is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

from edgecomp.report.charts import data_uri
from edgecomp.report.facts import (
    AccuracyRow,
    BudgetRow,
    LayerRow,
    accuracy_rows,
    budget_rows,
    gated_percentile,
    has_schemes,
    latency_gate,
    layer_rows,
)
from edgecomp.report.fmt import UNBOUNDED, is_bounded, ms, pct, points, ratio, si
from edgecomp.report.latency import (cost_text, latency_layer_rows, predicted_vs_measured, rounding_text, timing_text,
                                     versus_text)
from edgecomp.report.style import CSS

STATUS_CLASS = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "warn", "SKIPPED": "muted", "ERROR": "fail",
                "NO BUDGET": "muted"}
HEADLINES = {
    "PASS": "meets every budget of",
    "FAIL": "misses a budget of",
    "INCONCLUSIVE": "could not be shown to meet the budgets of",
    "ERROR": "could not be measured on",
}


def e(value) -> str:
    """Escaped text of anything (user strings: model specs, paths, messages)."""
    return html.escape("" if value is None else str(value), quote=True)


def badge(status: str) -> str:
    return f'<span class="badge {STATUS_CLASS.get(status, "muted")}">{e(status)}</span>'


def render_page(report: dict, images: dict[str, str | Path | None]) -> str:
    """The whole page. `images`: 'ranks', 'budgets', 'latency' -> PNG paths (missing ones are left out)."""
    budgets = budget_rows(report)
    title = f"{report['model']} on {report['device']}"
    body = "".join([
        _header(report),
        _banner(report, budgets),
        _budgets(budgets, images.get("budgets")),
        _accuracy(accuracy_rows(report), report),
        _layers(layer_rows(report), report, images.get("ranks")),
        _latency(report, images.get("latency")),
        _latency_layers(report),
        _gates(report),
        _notes(report),
        _files(report),
        (f"<footer>edgecomp {e(report.get('edgecomp_version'))} &middot; report.json holds every number on this "
         "page.</footer>"),
    ])
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>edgecomp: {e(title)} &mdash; {e(report['verdict'])}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def _header(report: dict) -> str:
    facts = [f"target <code>{e(report.get('target'))}</code>", f"precision {e(report.get('precision'))}",
             f"method {e(report.get('method'))}", f"cost {e(cost_text(report))}"]
    rounds = len(report["rounds"])
    facts.append(f"{rounds} round{'s' if rounds != 1 else ''}")
    return (f"<header><h1>edgecomp export: <code>{e(report['model'])}</code> on {e(report['device'])}</h1>"
            f"<div class=\"sub\">{' &middot; '.join(facts)}<br>measured with {e(report.get('measured_on'))}</div>"
            "</header>")


def _banner(report: dict, budgets: list[BudgetRow]) -> str:
    verdict = str(report["verdict"])
    gates = report["final"]["verify"].get("gates", [])
    reasons = [g for g in gates if g["status"] not in ("PASS", "SKIPPED")]
    headline = f"<b>{e(report['model'])}</b> {HEADLINES.get(verdict, 'was checked on')} <b>{e(report['device'])}</b>"
    why = ""
    if reasons:
        why = "<ul>" + "".join(f"<li>{e(g['name'])}: {e(g['message'])}</li>" for g in reasons) + "</ul>"
    banner = (f"<section class=\"banner {STATUS_CLASS.get(verdict, 'muted')}\">"
              f"<div><div class=\"verdict\">{e(verdict)}</div><div class=\"exit\">exit code {e(report['exit_code'])}"
              f"</div></div><div class=\"why\">{headline}{why}</div></section>")
    tiles = [_tile(row) for row in budgets]
    acc = [r for r in accuracy_rows(report) if r.top1 is not None]
    if acc:
        last = acc[-1]
        delta = last.delta
        tiles.append(f"<div class=\"tile\"><div class=\"k\">Top-1, {e(last.label.lower())}</div>"
                     f"<div class=\"v\">{pct(last.top1)}</div><div class=\"d\">{_delta_html(delta)}"
                     f"{' vs the original' if delta is not None else e(last.where)}</div></div>")
    callout = ""
    if report.get("stand_in"):
        callout = (f"<div class=\"callout\"><b>Stand-in measurement.</b> Measured on this host, not on "
                   f"{e(report['device'])}: the latency numbers describe this host. Pass <code>--target</code> "
                   "to measure on the device.</div>")
    return banner + f"<div class=\"tiles\">{''.join(tiles)}</div>" + callout


def _tile(row: BudgetRow) -> str:
    if row.achieved is None:
        return ""
    if is_bounded(row.budget):
        detail = f"budget {_abs(row.budget, row)} &middot; {badge(row.status)}"
    else:
        detail = "no budget (unconstrained)"
    value = _abs(row.achieved, row)
    if row.original and row.unit != "ms":
        value = f"{ratio(row.as_ratio(row.achieved))} <span class=\"muted\" style=\"font-size:13px\">of original</span>"
        detail = f"{_abs(row.achieved, row)} &middot; " + detail
    return (f"<div class=\"tile\"><div class=\"k\">{e(row.resource)}</div><div class=\"v\">{value}</div>"
            f"<div class=\"d\">{detail}</div></div>")


def _abs(value: float | None, row: BudgetRow) -> str:
    if value is None:
        return "-"
    if not is_bounded(value):
        return UNBOUNDED
    if row.unit == "ms":
        return e(ms(value))
    return e(si(value, "B" if row.unit == "B" else " MACs").replace("  ", " "))


def _ratio_cell(value: float | None, row: BudgetRow, *, budget: bool = False) -> str:
    if value is None:
        return "<td class=\"num muted\">not measured</td>"
    if budget and not is_bounded(value):
        return f"<td class=\"num muted\">{UNBOUNDED}</td>"
    r = row.as_ratio(value)
    main = f"{ratio(r)} <span class=\"muted\">{e(row.base_name)}</span>" if r is not None else "-"
    return f"<td class=\"num\">{main}<span class=\"abs\">{_abs(value, row)}</span></td>"


def _budgets(rows: list[BudgetRow], chart) -> str:
    body = []
    for row in rows:
        note = f"<span class=\"abs\">{e(row.source)}</span>" if row.source else ""
        if row.note:
            note += f"<span class=\"abs\">{e(row.note)}</span>"
        body.append(f"<tr><td>{e(row.resource)}{note}</td>{_ratio_cell(row.original, row)}"
                    f"{_ratio_cell(row.budget, row, budget=True)}{_ratio_cell(row.achieved, row)}"
                    f"<td>{badge(row.status)}</td></tr>")
    uri = data_uri(chart)
    figure = (f"<figure><img alt=\"cost as a fraction of the original, with the budgets\" src=\"{uri}\">"
              "<figcaption>Cost of the exported model as a fraction of the original (log scale); red marks are the "
              "budgets.</figcaption></figure>") if uri else ""
    return ("<h2>Budgets<small>ratios to the original model (latency: to its budget); absolute values below</small>"
            "</h2><table><thead><tr><th>Resource</th><th class=\"num\">Original</th><th class=\"num\">Budget</th>"
            "<th class=\"num\">Achieved</th><th>Status</th></tr></thead><tbody>" + "".join(body)
            + "</tbody></table>" + figure)


def _delta_html(delta: float | None) -> str:
    if delta is None:
        return ""
    cls = "down" if delta < -0.0005 else ("up" if delta > 0.0005 else "muted")
    return f"<span class=\"{cls}\">{e(points(delta))}</span>"


def _accuracy(rows: list[AccuracyRow], report: dict) -> str:
    if not rows:
        return ("<h2>Accuracy</h2><p class=\"note\">No accuracy was measured: pass <code>--eval-data</code> "
                "(labelled data) to compare the original and compressed models.</p>")
    body = []
    for row in rows:
        width = 0.0 if row.top1 is None else max(0.0, min(100.0, 100 * row.top1))
        body.append(f"<tr><td>{e(row.label)}</td><td class=\"num\"><b>{pct(row.top1)}</b></td>"
                    f"<td><span class=\"acc\"><i style=\"width:{width:.1f}%\"></i></span></td>"
                    f"<td class=\"num\">{_delta_html(row.delta)}</td><td class=\"muted\">{e(row.where)}"
                    f"{'<br>' + e(row.note) if row.note else ''}</td></tr>")
    note = ""
    if report["final"]["compress"].get("skipped"):
        note = "<p class=\"note\">The original model already fits: it was exported without compression.</p>"
    return ("<h2>Accuracy<small>top-1; differences in percentage points against the original on the same data"
            "</small></h2><table><thead><tr><th>Model</th><th class=\"num\">Top-1</th><th></th>"
            "<th class=\"num\">&Delta; vs original</th><th>Evaluated on</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table>" + note)


def _rank_cell(row: LayerRow) -> str:
    if row.rank is None or not row.max_rank:
        return "<td></td>"
    fill = 100.0 * min(row.rank, row.max_rank) / row.max_rank if row.factored else 100.0
    style = "" if row.factored else ";background:#8c959f"
    marker = ""
    if row.break_even_rank and row.break_even_rank <= row.max_rank:
        marker = f"<b title=\"break-even rank {row.break_even_rank}\" style=\"left:{100.0 * row.break_even_rank / row.max_rank:.1f}%\"></b>"
    text = e(row.rank_text) if row.factored else f"full <span class=\"muted\">(max {row.max_rank})</span>"
    return (f"<td><div class=\"rank\"><span class=\"meter\"><i style=\"width:{fill:.1f}%{style}\"></i>{marker}</span>"
            f"<span>{text}</span></div></td>")


def _cost_cell(before: int, after: int, unit: str = "") -> str:
    change = f"{ratio(after / before)}" if before else "-"
    cls = "up" if before and after < before else "muted"
    return (f"<td class=\"num\">{e(si(before, unit))} &rarr; <b>{e(si(after, unit))}</b>"
            f"<span class=\"abs {cls}\">{change}</span></td>")


def _layers(rows: list[LayerRow], report: dict, chart) -> str:
    comp = report["final"]["compress"]
    if comp.get("skipped"):
        return ("<h2>Per-layer ranks</h2><p class=\"note\">Not compressed: "
                f"{e(comp.get('reason', 'the original model already fits the budgets'))}.</p>")
    if not rows:
        return "<h2>Per-layer ranks</h2><p class=\"note\">This compress run recorded no layers.</p>"
    body = []
    schemes = has_schemes(rows)  # a Scheme column: what each layer was factored by (auto: its own choice)
    for row in rows:
        energy = "" if row.energy is None else f"{100 * row.energy:.1f}%"
        cls = " class=\"other\"" if row.rank is None else ""
        name = e(row.name) if row.rank is None else f"<code>{e(row.name)}</code>"
        scheme = f"<td>{e(row.scheme or '') if row.factored else ''}</td>" if schemes else ""
        body.append(f"<tr{cls}><td>{name}</td><td class=\"shape\">{e(row.shape)}</td>{scheme}{_rank_cell(row)}"
                    f"{_cost_cell(row.original_macs, row.macs)}{_cost_cell(row.original_params, row.params)}"
                    f"<td class=\"num\">{energy}</td></tr>")
    analysis = report["analysis"]
    body.append(f"<tr class=\"total\"><td>whole model</td><td></td>{'<td></td>' if schemes else ''}<td></td>"
                f"{_cost_cell(analysis['original_macs'], comp.get('macs', analysis['original_macs']))}"
                f"{_cost_cell(analysis['original_params'], comp.get('params', analysis['original_params']))}"
                "<td></td></tr>")
    uri = data_uri(chart)
    figure = (f"<figure><img alt=\"rank allocation per layer\" src=\"{uri}\"><figcaption>Rank allocation: the rank "
              "each layer keeps as a share of its maximum (red tick: break-even rank, at or above which the layer "
              "stays whole), and its MACs before and after (log scale).</figcaption></figure>") if uri else ""
    factored = sum(1 for r in rows if r.factored)
    decomposable = sum(1 for r in rows if r.rank is not None)
    return (f"<h2>Per-layer ranks<small>{factored} of {decomposable} decomposable layers factored by "
            f"{e(comp.get('method'))}</small></h2><table><thead><tr><th>Layer</th><th>Shape</th>"
            + ("<th>Scheme</th>" if schemes else "") + "<th>Rank chosen / max</th><th class=\"num\">MACs before &rarr; after</th>"
            "<th class=\"num\">Params before &rarr; after</th><th class=\"num\">Energy kept</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table><p class=\"note\">Rank: components kept of the layer's "
            "matricization (max = its smaller side); a layer at or above its break-even rank (red tick) is kept whole. "
            "Energy kept: the share of the layer's squared singular values that its rank keeps."
            + (" Scheme: how the layer was factored (under --scheme auto each layer's own choice; a Tucker-2 layer "
               "shows its ranks (r1, r2), and its energy kept is 1 minus the relative squared error of its "
               "factorization)." if schemes else "") + "</p>" + figure)


def _latency(report: dict, chart) -> str:
    final = report["final"]
    lat = final["verify"].get("latency") or {}
    gate = latency_gate(final["verify"])
    cells = [("p50", ms(lat.get("p50"))), ("p90", ms(lat.get("p90"))), ("p99", ms(lat.get("p99"))),
             ("mean", ms(lat.get("mean"))),
             ("robust CV", "-" if lat.get("robust_cv") is None else f"{lat['robust_cv']:.3f}"),
             ("samples", e(lat.get("n", "-")))]
    if gate is not None:
        cells.append((f"budget ({gated_percentile(gate)})", ms(gate["threshold"])))
    stats = "".join(f"<div class=\"tile\"><div class=\"k\">{e(k)}</div><div class=\"v\">{v}</div></div>"
                    for k, v in cells)
    unstable = ("<p class=\"note down\">The run was unstable (high spread): quiet the machine or lock clocks "
                "before trusting small differences.</p>") if lat.get("unstable") else ""
    uri = data_uri(chart)
    figure = (f"<figure><img alt=\"latency histogram with the budget\" src=\"{uri}\"><figcaption>Latency of "
              "every timed inference; the budget is the red line, or an arrow when it lies far off the samples."
              "</figcaption></figure>") if uri else ""
    return (f"<h2>Latency<small>{e(report.get('measured_on'))}</small></h2><div class=\"tiles small\">{stats}</div>"
            + unstable + figure + _rounds(report))


def _latency_layers(report: dict) -> str:
    """Per layer, as timed on the target: dense ms, factored ms at the built rank (the fit), what was built;
    and the whole model's predicted latency against the measured one when latency was budgeted."""
    rows = latency_layer_rows(report)
    pair = predicted_vs_measured(report)
    rounding = rounding_text(report)
    if not rows and pair is None and rounding is None:
        return ""
    parts = [f"<h2>Per-layer latency<small>compute cost: {e(cost_text(report))}</small></h2>"]
    if pair is not None:
        parts.append(f"<p class=\"note\">Whole model: predicted <b>{e(ms(pair[0]))}</b> by the per-layer fit, "
                     f"measured p50 <b>{e(ms(pair[1]))}</b>.</p>")
    if rounding is not None:
        parts.append(f"<p class=\"note\">Rank rounding: {e(rounding)}.</p>")
    versus = versus_text(report)
    if versus is not None:
        parts.append(f"<p class=\"note\">Against the original, timed together on the target: {e(versus)}.</p>")
    if rows:
        body = "".join(
            f"<tr><td><code>{e(r.name)}</code></td><td class=\"num\">{e(ms(r.dense_ms))}</td>"
            f"<td class=\"num\">{e(r.rank_text)}</td><td class=\"num\">{e(ms(r.factored_ms))}</td>"
            f"<td>{_chosen_badge(r.chosen, r.faster)}</td>"
            f"<td class=\"muted\" style=\"font-size:13px\">{e(r.why)}</td></tr>" for r in rows)
        parts.append("<table><thead><tr><th>Layer</th><th class=\"num\">Dense</th><th class=\"num\">Rank</th>"
                     "<th class=\"num\">Factored (fit)</th><th>Chosen</th><th>Why</th></tr></thead><tbody>"
                     + body + f"</tbody></table><p class=\"note\">Per-layer timings: {e(timing_text(report) or 'isolated')}; "
                     "factored: the line a + b&middot;rank fitted to its timings, at the built rank.</p>")
    return "".join(parts)


def _chosen_badge(chosen: str, faster: bool | None) -> str:
    if chosen != "factored":
        return '<span class="badge muted">dense</span>'
    if faster is False:  # built factored although the never-slower rule would have kept it dense
        return '<span class="badge warn">factored, not faster</span>'
    return '<span class="badge pass">factored</span>'


def _rounds(report: dict) -> str:
    rounds = report["rounds"]
    if len(rounds) < 2:
        return ""
    body = []
    for r in rounds:
        comp, ver = r["compress"], r["verify"]
        gate = latency_gate(ver)
        target = "original (fits)" if comp.get("skipped") else si(comp.get("mac_budget"), " MACs")
        body.append(f"<tr><td>{e(r['round'])}</td><td class=\"num\">{e(target)}</td>"
                    f"<td class=\"num\">{e(si(comp.get('macs', report['analysis']['original_macs'])))}</td>"
                    f"<td class=\"num\">{ms((ver.get('latency') or {}).get('p50'))}</td>"
                    f"<td class=\"num\">{ms(gate['measured']) if gate else '-'}</td><td>{badge(ver['verdict'])}</td>"
                    f"<td class=\"muted\">{e(r.get('note', ''))}</td></tr>")
    return ("<h3>Rounds</h3><p class=\"note\">Each round that missed the latency budget tightened the next round's "
            "MAC budget by the measured ratio.</p><table><thead><tr><th>Round</th><th class=\"num\">MAC budget</th>"
            "<th class=\"num\">MACs</th><th class=\"num\">p50</th><th class=\"num\">gated</th><th>Verdict</th>"
            "<th>Note</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>")


def _measure(value, unit: str) -> str:
    if value is None:
        return ""
    if unit == "top-1" and isinstance(value, (int, float)):  # an accuracy drop: in percentage points
        return e(f"{100 * value:.2f} pt")
    if isinstance(value, float):
        return e(f"{value:.4g} {unit or ''}".strip())
    return e(f"{value} {unit or ''}".strip())


def _gates(report: dict) -> str:
    gates = report["final"]["verify"].get("gates", [])
    if not gates:
        return ""
    body = "".join(f"<tr><td>{e(g['name'])}</td><td>{badge(g['status'])}</td>"
                   f"<td class=\"num\">{_measure(g.get('measured'), g.get('unit'))}</td>"
                   f"<td class=\"num\">{_measure(g.get('threshold'), g.get('unit'))}</td>"
                   f"<td class=\"muted\" style=\"font-size:13px\">{e(g.get('message'))}</td></tr>" for g in gates)
    return ("<h2>Gates<small>what decides the exit code</small></h2><table><thead><tr><th>Gate</th><th>Status</th>"
            "<th class=\"num\">Measured</th><th class=\"num\">Threshold</th><th>Detail</th></tr></thead><tbody>"
            + body + "</tbody></table>")


def _notes(report: dict) -> str:
    notes = [n for n in report.get("notes", []) if not (report.get("stand_in") and "STAND-IN" in n)]
    if not notes:
        return ""
    return "<h2>Notes</h2><ul class=\"notes\">" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"


def _files(report: dict) -> str:
    export = report["final"]["export"]
    items = [("Artifact", export.get("artifact"))]
    if export.get("trtexec_script"):
        items.append(("TensorRT build script (run on the device)", export["trtexec_script"]))
    if report.get("weights"):
        items.append(("Source weights", report["weights"]))
    rows = "".join(f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in items if v)
    stages = "".join(f"<tr><td>{e(s.get('stage'))}</td><td><code>{e(s.get('folder'))}</code></td>"
                     f"<td class=\"num\">{s.get('seconds', 0):.1f} s</td><td>{'reused' if s.get('reused') else 'ran'}"
                     "</td></tr>" for s in report.get("stages", []))
    details = (f"<details><summary>Stages</summary><table><tbody>{stages}</tbody></table></details>"
               if stages else "")
    return f"<h2>Files</h2><table><tbody>{rows}</tbody></table>{details}"
