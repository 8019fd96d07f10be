"""Print the Markdown tables of BENCHMARKS.md from benchmarks/results/*.json (no re-measuring).

    python benchmarks/make_tables.py
"""

from __future__ import annotations

import json
from collections import defaultdict

from common import RESULTS


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def rank_selection():
    rows = []
    for name in ("rank_selection", "rank_selection_channel", "rank_selection_unbudgeted"):
        data = load(name)
        if data:
            rows += data["rows"]
    if not rows:
        return
    methods = ["cobla", "pos-cvx", "pos-greedy", "cptv", "uniform"]
    for scheme in ("spatial", "channel"):
        table = defaultdict(dict)
        for r in rows:
            if r["scheme"] == scheme and r["method"] in methods:
                table[r["eta"]][r["method"]] = r
        if not table:
            continue
        print(f"\n**{scheme} scheme** (top-1 on the 10k test set before fine-tuning; reference 0.9113)\n")
        print("| eta | " + " | ".join(methods) + " | COBLA MACs / params ratio | COBLA wall s |")
        print("|---" * (len(methods) + 3) + "|")
        for eta in sorted(table):
            cells = [f"{table[eta][m]['top1']:.4f}" if m in table[eta] else "-" for m in methods]
            c = table[eta].get("cobla")
            extra = f"{c['mac_ratio']:.3f} / {c['param_ratio']:.3f} | {c['seconds']:.0f}" if c else "- | -"
            print(f"| {eta:.1f} | " + " | ".join(cells) + f" | {extra} |")
        unb = [r for r in rows if r["scheme"] == scheme and r["method"] in ("vbmf", "gavish-donoho")]
        for r in unb:
            print(f"\n{r['method']} ({scheme}, budgets not enforced): top-1 {r['top1']:.4f} at "
                  f"{r['mac_ratio']:.3f}x MACs, {r['param_ratio']:.3f}x params")


def aimet():
    for name in ("aimet_svd", "aimet_svd_n20"):
        data = load(name)
        if not data:
            continue
        print(f"\n**{name}**\n\n| target eta | MAC ratio | param ratio | test top-1 | s (from scratch) |\n|---|---|---|---|---|")
        for r in data.get("rows", data.get("results", [])):
            print(f"| {r['target_mac_ratio']} | {r.get('mac_ratio', r.get('achieved_mac_ratio')):.4f} | "
                  f"{r.get('param_ratio'):.4f} | {r.get('test_top1'):.4f} | {r['standalone_seconds']:.1f} |")


def latency():
    data = load("latency_vs_macs")
    if not data:
        return
    print("\n| model | eta | MAC ratio | latency ratio (p50) | p50 ms | CV | COBLA s |\n|---|---|---|---|---|---|---|")
    for r in data["rows"]:
        print(f"| {r['model']} | {r['eta']} | {r['mac_ratio']:.3f} | {r.get('latency_ratio', 1.0):.3f} | "
              f"{r['p50_ms']:.3f} | {r['cv']:.2f} | {r.get('cobla_seconds', float('nan')):.0f} |")


if __name__ == "__main__":
    rank_selection()
    aimet()
    latency()
