"""The latency gate's decisions across noise conditions: budget/measured ratio against verdict.

    python benchmarks/bench_gate_decisions.py [--repeats 3] [--busy 2] [--percentile 90]

The real harness on this host: the shipped Fashion-MNIST CNN (zoo:fmnist_cnn with
edgecomp/weights/fmnist_cnn.safetensors) is exported to ONNX and measured with
`runtime.measure` on the x86-host profile, local target, default settings (1 s warm-up,
>= 100 iterations and >= 1 s timed) -- exactly the measurement `edgecomp verify` makes. Each
measurement is then gated at budgets B = ratio x (its own measured p90) for every ratio, with
`runtime.gates.latency_gate` (what `verify` calls), under:
  new   the default rule (robust CV; an unstable run's bounds widened by time-block sectioning),
  warn  --allow-unstable (i.i.d. order-statistic bounds, instability only noted),
  old   the previous rule, recomputed from the same samples: INCONCLUSIVE whenever CV > 0.10,
        else the order-statistic bounds.
Two conditions, `--repeats` measurements each: quiet (nothing started by this script; the machine
is shared, so the load average is recorded) and loaded (`--busy` busy-loop processes started
before the measurement and stopped after it).

Writes benchmarks/results/gate_decisions.json; `--table` prints its Markdown tables (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # benchmarks/common.py, and the repo's packages
from common import RESULTS, reference_model, write_results  # noqa: E402

from edgecomp import runtime  # noqa: E402
from edgecomp.profiles import load_profile  # noqa: E402
from edgecomp.runtime import gates as G  # noqa: E402

RATIOS = (0.001, 0.1, 0.5, 0.9, 1.1, 2.0, 5.0, 10.0, 1000.0)
OLD_CV_THRESHOLD = 0.10


def old_rule(stats, budget_ms: float, percentile: float) -> str:
    """The gate before the robust/sectioning rule: a CV above 0.10 vetoed any verdict."""
    ps = stats.percentile(percentile)
    if not ps.enough_samples or stats.cv > OLD_CV_THRESHOLD:
        return G.INCONCLUSIVE
    if ps.upper_bound <= budget_ms:
        return G.PASS
    return G.FAIL if ps.lower_bound > budget_ms else G.INCONCLUSIVE


def start_busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)


def measure_once(path: Path, profile, percentile: float) -> dict:
    load_before = os.getloadavg()
    m = runtime.measure(path, profile, target="local", percentile=percentile)
    s = m.report.latency
    ps = s.percentile(percentile)
    decisions = {}
    for ratio in RATIOS:
        budget = ratio * s.percentile(percentile).value
        new = G.latency_gate(s, budget, percentile)
        warn = G.latency_gate(s, budget, percentile, unstable_policy="warn")
        decisions[f"{ratio:g}"] = {
            "budget_ms": budget,
            "new": new.status,
            "warn": warn.status,
            "old": old_rule(s, budget, percentile),
        }
    gate = G.latency_gate(s, ps.value, percentile)  # bounds used by the new rule (budget-independent)
    return {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "n": s.n,
        "p50_ms": s.p50,
        "p90_ms": ps.value,
        "max_ms": s.max,
        "cv": s.cv,
        "robust_cv": s.robust_cv,
        "unstable": s.unstable,
        "cv_threshold": s.cv_threshold,
        "order_statistic_bounds_ms": [ps.lower_bound, ps.upper_bound],
        "gate_bounds_ms": [gate.details["lower_bound_ms"], gate.details["upper_bound_ms"]],
        "widened": gate.details["widened"],
        "block_estimates_ms": gate.details.get("block_estimates_ms"),
        "decisions": decisions,
    }


def _abbrev(statuses: list[str]) -> str:
    """['PASS', 'PASS', 'INCONCLUSIVE'] -> 'PASS 2, INC 1'."""
    short = {G.PASS: "PASS", G.FAIL: "FAIL", G.INCONCLUSIVE: "INC"}
    counts = {v: statuses.count(k) for k, v in short.items() if statuses.count(k)}
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k} {n}" for k, n in counts.items())


def print_tables(path: Path) -> None:
    doc = json.loads(path.read_text())
    conds = doc["conditions"]
    print("| condition | run | load avg (1 min) | n | p90 ms | CV | robust CV | unstable | order-stat bounds ms | "
          "gate bounds ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cond, runs in conds.items():
        for i, r in enumerate(runs):
            lo, hi = r["order_statistic_bounds_ms"]
            glo, ghi = r["gate_bounds_ms"]
            print(f"| {cond} | {i + 1} | {r['load_average_before'][0]:.2f} | {r['n']} | {r['p90_ms']:.3f} | "
                  f"{r['cv']:.2f} | {r['robust_cv']:.3f} | {'yes' if r['unstable'] else 'no'} | {lo:.3f}-{hi:.3f} | "
                  f"{glo:.3f}-{ghi:.3f}{' (widened)' if r['widened'] else ''} |")
    print()
    header = "| budget / measured p90 | " + " | ".join(f"{c}: new | {c}: --allow-unstable | {c}: old"
                                                     for c in conds) + " |"
    print(header)
    print("|---" * (1 + 3 * len(conds)) + "|")
    for ratio in doc["ratios"]:
        key = f"{ratio:g}"
        cells = []
        for runs in conds.values():
            for rule in ("new", "warn", "old"):
                cells.append(_abbrev([r["decisions"][key][rule] for r in runs]))
        print(f"| {key} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true", help="print the Markdown tables from the results file and exit")
    ap.add_argument("--out", default="gate_decisions.json",
                    help="results file name in benchmarks/results/ (written, or read with --table)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per condition")
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes in the loaded condition")
    ap.add_argument("--percentile", type=float, default=90.0)
    args = ap.parse_args()
    if args.table:
        print_tables(RESULTS / args.out)
        return

    from edgecomp.exporters import export_onnx

    profile = load_profile("x86-host")
    conditions = {}
    with tempfile.TemporaryDirectory(prefix="edgecomp-gate-") as d:
        path = Path(d) / "fmnist_cnn.onnx"
        loaded = reference_model()
        export_onnx(loaded.module, path, tuple(loaded.input_shape))
        runtime.measure(path, profile, target="local", percentile=args.percentile)  # page cache, imports
        for condition in ("quiet", "loaded"):
            runs = []
            for r in range(args.repeats):
                procs = start_busy(args.busy) if condition == "loaded" else []
                try:
                    if procs:
                        time.sleep(1.0)  # let the busy loops reach the scheduler
                    runs.append(measure_once(path, profile, args.percentile))
                finally:
                    stop_busy(procs)
                run = runs[-1]
                print(f"{condition} #{r}: n={run['n']} p90 {run['p90_ms']:.3f} ms CV {run['cv']:.3f} robust CV "
                      f"{run['robust_cv']:.3f} bounds {run['gate_bounds_ms']} load {run['load_average_before'][0]:.2f} "
                      + " ".join(f"{k}:{v['new'][0]}/{v['old'][0]}" for k, v in run["decisions"].items()),
                      file=sys.stderr)
                time.sleep(2.0)
            conditions[condition] = runs

    write_results(args.out.removesuffix(".json"), {
        "model": "zoo:fmnist_cnn (edgecomp/weights/fmnist_cnn.safetensors), ONNX fp32",
        "device_profile": "x86-host (local target, ONNX Runtime CPUExecutionProvider, default threads)",
        "percentile": args.percentile,
        "ratios": list(RATIOS),
        "busy_processes": args.busy,
        "repeats": args.repeats,
        "settings": "runtime.measure defaults: warm-up 1 s, >= 100 iterations and >= 1 s timed, confidence 0.99",
        "budget": "ratio x the measured p90 of the same run",
        "rules": {"new": "default (robust CV, widened when unstable)", "warn": "--allow-unstable",
                  "old": f"CV > {OLD_CV_THRESHOLD} => INCONCLUSIVE, else order-statistic bounds"},
        "conditions": conditions,
    })


if __name__ == "__main__":
    main()
