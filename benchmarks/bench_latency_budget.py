"""Latency you can bank on (issue 14): whole-model ONNX Runtime CPU latency ratio vs MAC ratio, for MAC-budgeted
and latency-budgeted rank selection side by side, on the Fashion-MNIST reference CNN, zoo:resnet18 and
zoo:mobilenet_v2 (224x224; random-init weights, seed 0: latency depends only on shapes and ranks).

For each model and thread count:

1. The per-layer latency table is measured once on this host with edgecomp export's code path
   (edgecomp.pipeline.latency_table.measure_latency_table) and a per-layer timer that runs ONNX Runtime as the
   whole-model timing does: `threads` intra-op threads, spinning off, p50 of >= 60 runs (TIMING). Entries go to
   a private cache (--cache-dir), so a rerun reuses them.
2. For each eta, pos-cvx (the exact knapsack on truncation errors; no data) selects ranks:
   - "macs": MAC and memory budgets = eta x original, never-slower rule on (never_slower_table=table);
   - "macs-no-rule": the same with the rule off (what the rule buys);
   - "latency": latency budget = eta x the table's predicted original latency (fixed + sum of dense layers),
     MACs and memory unconstrained, rule on. An unreachable budget records the InfeasibleBudgetError and the
     minimum reachable predicted latency; a "latency-min" model (budget = that minimum) is then built and timed.
3. Every variant and the original are exported to ONNX and timed in ONE interleaved run
   (common.interleaved_latency: spinning off, sessions alternated, order rotated each round), repeated --repeats
   times. Per variant: the median over repeats of its per-repeat ratio to the original (each the median of its
   per-round medians / the original's), min..max over repeats, and os.getloadavg() before and after each repeat.

4. The closed loop (`edgecomp export`'s safety net, edgecomp.pipeline.rounds.next_mac_budget): each "latency"
   variant whose measured ratio is above eta gets a second round, "latency-round2": the same latency budget plus
   a MAC budget of its MACs x eta / measured ratio, timed in a second interleaved run against the original
   (--no-closed-loop skips it).

Goals checked ("met?"): every rule-on variant's median latency ratio <= 1 (never slower); a latency-budgeted
variant's median ratio <= 1.1 x eta (and <= 1). --iterations 0 (default) picks per model
clamp(round(--turn-seconds / original ms), 20, 300) timed runs per turn, warmup a tenth of that (>= 3).

Full run (the lead runs it). Estimate ~30-35 min on this 2-core host at load average 4-6 (less when quiet), from
the smoke (fmnist, 2 thread counts: 15 s) and probes: per thread count, resnet18 ~7.5 min (table ~2 min; 7
pos-cvx selections of up to 30 s each, the knapsack's time limit; exports ~1 min; interleaved timing ~1.5 min:
26 ms/run at 1 thread) and mobilenet_v2 ~6.5 min (table ~2.5 min; selections ~10 s each); plus each model's
spectra once (resnet18 ~35 s, mobilenet_v2 ~60 s) and the first thread count's "macs-no-rule" selections:

    python benchmarks/bench_latency_budget.py --models fmnist,resnet18,mobilenet_v2 --etas 0.3,0.5,0.7 \\
        --threads 1,2 --repeats 3 --rounds 5

Smoke (~15 s): --models fmnist --etas 0.5 --threads 1 --repeats 1 --rounds 2 --iterations 50 \\
    --name latency_budget_smoke --cache-dir /tmp/lb_smoke_cache
Writes benchmarks/results/<--name, default latency_budget>.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from common import interleaved_latency, reference_model, write_results

from edgecomp.compression.methods import Budgets, compress
from edgecomp.errors import InfeasibleBudgetError
from edgecomp.exporters import export_onnx
from edgecomp.graph import analyze_model
from edgecomp.latency import LatencyCache
from edgecomp.latency.keys import host_simd_lanes
from edgecomp.models import get_zoo_model
from edgecomp.pipeline.latency_table import TIMING, Timed, measure_latency_table
from edgecomp.ranks.latency import fitted_ms

CACHE_DIR = Path(__file__).resolve().parent / "cache" / "latency_budget"  # benchmarks/cache/ is git-ignored
TOLERANCE = 1.10  # a latency budget is met when the measured ratio <= 1.1 x eta
INF = float("inf")


SETTINGS = {"rank_multiple": 1}  # set once from the command line


@dataclass(frozen=True)
class TableRequest:
    """The two fields measure_latency_table reads from an ExportRequest when it is given its own timer."""

    scheme: str = "spatial"
    rank_multiple: int = 1  # the table's rank grid is aligned to it, as the built ranks are

    def target_url(self) -> str:
        return "local"


def nospin_timer(threads: int):
    """A measure_latency_table timer: ONNX Runtime CPU, `threads` intra-op threads, spinning off (as
    common.interleaved_latency), p50 over >= TIMING["iterations"] runs and >= TIMING["min_duration_s"]."""
    import numpy as np
    import onnxruntime as ort

    facts = {"runtime": "onnxruntime (spinning off)", "runtime_version": ort.__version__,
             "providers": ["CPUExecutionProvider"], "graph_optimization_level": "all", "precision": "fp32",
             "threads": threads, "batch": 1, "environment": {}}

    def time_onnx(path: Path) -> Timed:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        feed = {spec.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        start = time.perf_counter()
        while time.perf_counter() - start < TIMING["warmup_s"]:
            session.run(None, feed)
        times, start = [], time.perf_counter()
        while len(times) < TIMING["iterations"] or time.perf_counter() - start < TIMING["min_duration_s"]:
            t = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t)
        return Timed(1e3 * statistics.median(times), facts)

    return time_onnx


@contextmanager
def spectra_reused():
    """compress() computes every layer's SVD on each call (~30 s on resnet18 here); the weights never change
    between this benchmark's calls, so each model's spectra are computed once (keyed by the model object)."""
    import edgecomp.compression.methods as methods

    compute, memo = methods.compute_spectra, {}

    def reused(model, cost, **kwargs):
        key = (id(model), cost.scheme, tuple(cost.input_shape), tuple(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = (model, compute(model, cost, **kwargs))  # holding the model keeps its id unique
        return memo[key][1]

    methods.compute_spectra = reused
    try:
        yield
    finally:
        methods.compute_spectra = compute


def load(name: str, size: int) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if name == "fmnist":
        return reference_model().module.eval(), (1, 1, 28, 28)
    return get_zoo_model(name, seed=0).eval(), (1, 3, size, size)


def predicted_ms(table: dict, factored: dict) -> float:
    """The table's whole-model latency for what was built: fixed + each layer's fit at its built rank, or its
    dense latency where it was left dense (so a layer factored against the rule counts at its fit)."""
    return float(table["fixed_ms"]) + sum(
        fitted_ms(row, int(factored[name])) if name in factored else float(row["original_ms"])
        for name, row in table["layers"].items())


def select(model, shape, cost, table: dict, eta: float, kind: str, budget_ms: float | None = None,
           mac_ratio: float | None = None) -> dict:
    """One pos-cvx selection: the row describing it and the built model ("model"; None when infeasible).
    mac_ratio: a MAC budget beside the latency budget (the closed loop's second round)."""
    if kind in ("macs", "macs-no-rule"):
        budgets = Budgets(eta * cost.total_macs, eta * cost.total_params * 4, "fp32", f"{eta} x original",
                          f"{eta} x original")
        extra = {} if kind == "macs-no-rule" else {"never_slower_table": table}
    elif mac_ratio is not None:
        budgets = Budgets(mac_ratio * cost.total_macs, INF, "fp32", f"{mac_ratio:.4g} x original", "none")
        extra = {"latency_table": table, "latency_budget_ms": budget_ms, "never_slower_table": table}
    else:
        budgets = Budgets(INF, INF, "fp32", "none", "none")
        extra = {"latency_table": table, "latency_budget_ms": budget_ms, "never_slower_table": table}
    row = {"eta": eta, "selection": kind, "never_slower": kind != "macs-no-rule", "budget_ms": budget_ms,
           "mac_budget_ratio": mac_ratio}
    t0 = time.perf_counter()
    try:
        result = compress(model, shape, budgets, method="pos-cvx", scheme="spatial",
                          rank_multiple=SETTINGS["rank_multiple"], **extra)
    except InfeasibleBudgetError as exc:
        minimum = getattr(exc, "minimums", {}).get("latency")
        return {**row, "model": None, "infeasible": str(exc), "min_predicted_ms": minimum,
                "min_mac_ratio": exc.min_macs / cost.total_macs if exc.min_macs is not None else None}
    pred = predicted_ms(table, result.factored)
    return {**row, "model": result.model, "select_s": time.perf_counter() - t0,
            "mac_ratio": result.macs / cost.total_macs, "param_ratio": result.params / cost.total_params,
            "predicted_ms": pred, "library_predicted_ms": result.selection.info.get("predicted_latency_ms"),
            "factored": dict(result.factored), "n_factored": len(result.factored), "n_layers": len(result.ranks)}


def variants(model, shape, table: dict, etas: list[float], no_rule: dict) -> list[dict]:
    """Every selection at every eta (see the module docstring). `no_rule`: the "macs-no-rule" selections by eta,
    shared between thread counts (they do not read the table); its predictions are redone from this table."""
    cost = analyze_model(model, shape, "spatial")
    original_pred = predicted_ms(table, {})
    rows, minimum = [], None
    for eta in etas:
        for kind in ("macs", "macs-no-rule", "latency"):
            if kind == "macs-no-rule" and eta in no_rule:
                row = {**no_rule[eta], "predicted_ms": predicted_ms(table, no_rule[eta]["factored"]), "select_s": 0.0}
            else:
                row = select(model, shape, cost, table, eta, kind, eta * original_pred if kind == "latency" else None)
            if kind == "macs-no-rule":
                no_rule[eta] = dict(row)  # a copy: bench() pops the built model from the row
            rows.append(row)
            if kind == "latency" and row["model"] is None and row["min_predicted_ms"] is not None:
                minimum = row["min_predicted_ms"]
    if minimum is not None:  # what the fastest reachable model measures
        row = select(model, shape, cost, table, minimum / original_pred, "latency", minimum * (1 + 1e-6))
        rows.append({**row, "selection": "latency-min"})
    for row in rows:
        row["name"] = f"{row['selection']}@{row['eta']:.3g}"
        if "predicted_ms" in row:
            row["predicted_ratio"] = row["predicted_ms"] / original_pred
        if row.get("min_predicted_ms") is not None:
            row["min_predicted_ratio"] = row["min_predicted_ms"] / original_pred
    return rows


def timed(paths: dict, shape, threads: int, args, original_ms: float) -> dict:
    """--repeats interleaved runs of every model in `paths`: per model its per-repeat ratio and ms."""
    iterations = args.iterations or int(min(300, max(20, round(1e3 * args.turn_seconds / original_ms))))
    warmup = max(3, iterations // 10)
    repeats = []
    for _ in range(args.repeats):
        before = os.getloadavg()
        run = interleaved_latency(paths, shape, threads=threads, rounds=args.rounds, iterations=iterations,
                                  warmup=warmup)
        repeats.append({"load_before": before, "load_after": os.getloadavg(), "run": run})
    per_model = {}
    for name in paths:
        ratios = [r["run"][name]["ratio"] for r in repeats]
        per_model[name] = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                           "ratio_max": max(ratios), "ratios": ratios,
                           "ms_median": 1e3 * statistics.median(r["run"][name]["median_s"] for r in repeats),
                           "round_ratios": [r["run"][name]["round_ratios"] for r in repeats]}
    return {"iterations": iterations, "warmup": warmup, "rounds": args.rounds, "models": per_model,
            "load_average": [(r["load_before"], r["load_after"]) for r in repeats]}


def verdict(row: dict) -> str:
    if row.get("infeasible"):
        ratio, ms = row.get("min_predicted_ratio"), row.get("min_predicted_ms")
        if ratio is not None:
            return f"unreachable (min predicted {ms:.4g} ms = {ratio:.3f}x)"
        macs = row.get("min_mac_ratio")
        return "unreachable" + (f" (min MAC ratio {macs:.3f})" if macs is not None else "")
    ratio = row["measured"]["ratio_median"]
    if row["selection"] in ("latency", "latency-round2"):
        ok = ratio <= min(1.0, TOLERANCE * row["eta"])
        return ("yes" if ok else "NO") + f" (<= {min(1.0, TOLERANCE * row['eta']):.3f}x)"
    return ("yes" if ratio <= 1.0 else "NO") + " (<= 1x)" + ("" if row["never_slower"] else ", rule off")


def markdown(run: dict) -> str:
    head = (f"\n### {run['model']} {run['input_shape']}, {run['threads']} thread(s): original "
            f"{run['original_ms']:.3f} ms measured, {run['original_predicted_ms']:.3f} ms predicted; "
            f"load average {run['load_start'][0]:.2f} -> {run['load_end'][0]:.2f}\n\n"
            "| eta | selection | MAC ratio | predicted latency ratio | measured latency ratio (median, min..max) "
            "| met? |\n|---|---|---|---|---|---|\n")
    lines = []
    for row in run["rows"]:
        if row.get("infeasible"):
            lines.append(f"| {row['eta']:.3g} | {row['selection']} | - | - | - | {verdict(row)} |")
            continue
        m = row["measured"]
        lines.append(f"| {row['eta']:.3g} | {row['selection']} | {row['mac_ratio']:.3f} | {row['predicted_ratio']:.3f} "
                     f"| {m['ratio_median']:.3f} ({m['ratio_min']:.3f}..{m['ratio_max']:.3f}) | {verdict(row)} |")
    return head + "\n".join(lines)


def bench(name: str, model, shape, threads: int, args, workdir: Path, no_rule: dict) -> dict:
    load_start, t0 = os.getloadavg(), time.perf_counter()
    folder = workdir / f"{name}-{threads}t"
    folder.mkdir(parents=True, exist_ok=True)
    table = measure_latency_table(TableRequest(rank_multiple=SETTINGS["rank_multiple"]), {"input_shape": list(shape)}, folder / "table", print,
                                  loaded=SimpleNamespace(module=model), providers=["CPUExecutionProvider"],
                                  timer=nospin_timer(threads), cache=LatencyCache(args.cache_dir),
                                  layer_timing=args.layer_timing)
    table_s = time.perf_counter() - t0
    rows = variants(model, shape, table, args.etas, no_rule)
    paths = {"original": export_onnx(model, folder / "original.onnx", shape).path}
    for row in rows:
        built = row.pop("model")
        if built is not None:
            paths[row["name"]] = export_onnx(built, folder / f"{row['name']}.onnx", shape).path
    select_s = time.perf_counter() - t0 - table_s
    timing = timed(paths, shape, threads, args, table["total_ms"])
    for row in rows:
        if row["name"] in timing["models"]:
            row["measured"] = timing["models"][row["name"]]
            row["met"] = verdict(row).startswith("yes")
    if args.closed_loop:
        rows += closed_loop_round(model, shape, table, rows, threads, args, folder)
    run = {"model": name, "input_shape": list(shape), "threads": threads, "rows": rows,
           "original_ms": timing["models"]["original"]["ms_median"], "original_predicted_ms": predicted_ms(table, {}),
           "timing": {k: v for k, v in timing.items() if k != "models"},
           "table": {k: v for k, v in table.items() if k != "context"}, "table_s": table_s, "select_export_s": select_s,
           "timing_s": time.perf_counter() - t0 - table_s - select_s, "load_start": load_start,
           "load_end": os.getloadavg()}
    print(markdown(run), flush=True)
    return run


def closed_loop_round(model, shape, table: dict, rows: list[dict], threads: int, args, folder: Path) -> list[dict]:
    """`edgecomp export`'s safety net for each latency-budgeted row whose measured latency missed what was asked:
    a second round under the same latency budget plus a MAC budget of this round's MACs x asked / measured
    (edgecomp.pipeline.rounds.next_mac_budget), timed in its own interleaved run against the original."""
    missed = [row for row in rows if row["selection"] == "latency" and "measured" in row
              and row["measured"]["ratio_median"] > row["eta"]]
    if not missed:
        return []
    cost = analyze_model(model, shape, "spatial")
    paths = {"original": folder / "original.onnx"}
    second = []
    for row in missed:
        mac_ratio = row["mac_ratio"] * row["eta"] / row["measured"]["ratio_median"]
        new = select(model, shape, cost, table, row["eta"], "latency-round2", row["budget_ms"], mac_ratio)
        new["name"] = f"latency-round2@{row['eta']:.3g}"
        new["predicted_ratio"] = new.get("predicted_ms", 0.0) / predicted_ms(table, {})
        built = new.pop("model")
        if built is not None:
            paths[new["name"]] = export_onnx(built, folder / f"{new['name']}.onnx", shape).path
        second.append(new)
    timing = timed(paths, shape, threads, args, table["total_ms"])
    for row in second:
        if row["name"] in timing["models"]:
            row["measured"] = timing["models"][row["name"]]
            row["met"] = verdict(row).startswith("yes")
    return second


def summary(runs: list[dict]) -> dict:
    rows = [(run, row) for run in runs for row in run["rows"] if "measured" in row]
    slower = [f"{run['model']} {run['threads']}t {row['name']} {row['measured']['ratio_median']:.3f}x"
              for run, row in rows if row["never_slower"] and row["measured"]["ratio_median"] > 1.0]
    missed = [f"{run['model']} {run['threads']}t {row['name']} {row['measured']['ratio_median']:.3f}x"
              for run, row in rows if row["selection"] == "latency" and not row["met"]]
    missed_after = [f"{run['model']} {run['threads']}t {row['name']} {row['measured']['ratio_median']:.3f}x"
                    for run, row in rows if row["selection"] == "latency-round2" and not row["met"]]
    unreachable = [f"{run['model']} {run['threads']}t {row['name']}: {verdict(row)}"
                   for run in runs for row in run["rows"] if row.get("infeasible")]
    return {"never_slower_violations": slower, "latency_budget_misses": missed,
            "latency_budget_misses_after_round2": missed_after, "unreachable": unreachable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fmnist,resnet18,mobilenet_v2")
    parser.add_argument("--etas", default="0.3,0.5,0.7")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=0, help="timed runs per turn (0: from --turn-seconds)")
    parser.add_argument("--turn-seconds", type=float, default=0.5)
    parser.add_argument("--input-sizes", default="resnet18=224,mobilenet_v2=224", help="NAME=SIZE,... (ImageNet)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--layer-timing", choices=["isolated", "in-context", "auto"], default="isolated",
                        help="how the per-layer table times factored layers (edgecomp export --layer-timing)")
    parser.add_argument("--rank-multiple", default="1",
                        help="round every built rank down to this multiple (simd: this host's fp32 SIMD width)")
    parser.add_argument("--name", default="latency_budget", help="results file benchmarks/results/NAME.json")
    parser.add_argument("--no-closed-loop", dest="closed_loop", action="store_false",
                        help="skip the second round for latency-budgeted rows that missed what was asked")
    args = parser.parse_args()
    args.etas = [float(e) for e in args.etas.split(",")]
    if args.rank_multiple == "simd":
        lanes, isa = host_simd_lanes()
        print(f"rank multiple: simd = {lanes} ({isa})")
        args.rank_multiple = lanes
    SETTINGS["rank_multiple"] = int(args.rank_multiple)
    sizes = {k: int(v) for k, v in (item.split("=") for item in args.input_sizes.split(",") if item)}
    t0, load_start = time.perf_counter(), os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp, spectra_reused():
        for name in args.models.split(","):
            model, shape = load(name, sizes.get(name, 224))
            no_rule: dict = {}
            for threads in (int(t) for t in args.threads.split(",")):
                runs.append(bench(name, model, shape, threads, args, Path(tmp), no_rule))
                write_results(args.name, {"runs": runs, "settings": {**vars(args), "cache_dir": str(args.cache_dir)}})
    result = summary(runs)
    print(f"\nnever slower (rule on): {result['never_slower_violations'] or 'no violation'}")
    print(f"latency budgets missed (> 1.1 x eta): {result['latency_budget_misses'] or 'none'}")
    print(f"... and still missed after the second round: {result['latency_budget_misses_after_round2'] or 'none'}")
    print(f"unreachable latency budgets: {result['unreachable'] or 'none'}")
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s, load average {load_start} -> {os.getloadavg()}")
    write_results(args.name, {"runs": runs, "summary": result, "total_seconds": total, "load_average_start": load_start,
                              "load_average_end": os.getloadavg(),
                              "settings": {**vars(args), "cache_dir": str(args.cache_dir)}})


if __name__ == "__main__":
    main()
