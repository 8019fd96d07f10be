"""Decomposition schemes of `edgecomp compress` on the Fashion-MNIST reference model (issue 16): top-1 before
and after compression and after a short fine-tune, MAC/params ratios and seconds, per scheme and rank-selection
method at each MAC budget; then ONNX Runtime CPU latency of the compressed models at equal MACs.

    python benchmarks/bench_schemes.py [--etas 0.5,0.3] [--finetune-epochs 0.25] [--eval-samples 2000]
                                       [--latency-eta 0.5] [--rounds 7] [--max-minutes 20]

Runs: spatial, channel, cp, tucker2 and auto, each with COBLA (quick settings; for tucker2 and auto the exact
knapsack over Fisher-scored choices, edgecomp.compression.choice_scores) and with pos-cvx (the exact knapsack on
truncation errors). Memory budget unconstrained, seed 0. Top-1 is measured on a fixed subset (the first
--eval-samples) of fashion-mnist:test. Latency: every model at --latency-eta plus the original, converted
with edgecomp.convert, timed in one process by ONNX Runtime with 1 intra-op thread and spinning off, batch 1,
in --rounds rounds that alternate the sessions (order rotated each round); per model the median of its
per-round medians, reported as a ratio to the original's measured in the same rounds. The eta groups run in
the order given; a group whose estimated time would pass --max-minutes is skipped (recorded in the JSON).
Writes benchmarks/results/schemes.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from common import interleaved_latency, reference_model, write_results
from torch.utils.data import Subset

import edgecomp
from edgecomp.data import load_dataset

INPUT_SHAPE = (1, 1, 28, 28)
COBLA_QUICK = {"max_iter": 4, "sample": 0.01, "draws": 4}
RUNS = [("spatial", "cobla"), ("channel", "cobla"), ("cp", "cobla"), ("tucker2", "cobla"), ("auto", "cobla"),
        ("spatial", "pos-cvx"), ("channel", "pos-cvx"), ("cp", "pos-cvx"), ("tucker2", "pos-cvx"), ("auto", "pos-cvx")]


def compress_row(module, scheme: str, method: str, eta: float, train, test, args) -> tuple[dict, torch.nn.Module]:
    """One compress call (with edgecomp's own fine-tune); returns the row and the fine-tuned model."""
    t0 = time.perf_counter()
    result = edgecomp.compress(
        module, device=None, input_shape=INPUT_SHAPE, data=train, eval_data=test, mac_budget=eta,
        memory_budget=math.inf, method=method, scheme=scheme, seed=args.seed,
        finetune_epochs=args.finetune_epochs, cobla=COBLA_QUICK if method == "cobla" else None,
    )
    wall = time.perf_counter() - t0
    report, timings = result.report, result.report["timings"]
    finetune_s = timings.get("finetune_s", 0.0)
    row = {
        "scheme": scheme, "method": method, "eta": eta,
        "mac_ratio": report["mac_ratio"], "param_ratio": report["param_ratio"],
        "macs": report["macs"], "params": report["params"], "within_budgets": report["within_budgets"],
        "top1_original": report["original_accuracy"], "top1_compressed": report["accuracy_before_finetune"],
        "top1_finetuned": report["accuracy"],
        # the API fine-tunes after timings["total_s"] (analysis + rank selection + build) is taken
        "compress_seconds": timings["total_s"], "finetune_seconds": finetune_s,
        "wall_seconds": wall, "timings": timings, "ranks": result.ranks,
        "finetune_steps": (report.get("finetune") or {}).get("steps"),
    }
    return row, result.model.eval()


def measure_latency(onnx_paths: dict[str, Path], rounds: int, iterations: int, warmup: int) -> dict[str, dict]:
    """common.interleaved_latency of the reference model's input shape with 1 thread."""
    return interleaved_latency(onnx_paths, INPUT_SHAPE, threads=1, rounds=rounds, iterations=iterations,
                               warmup=warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etas", default="0.5,0.3", help="MAC budgets, run in this order")
    parser.add_argument("--finetune-epochs", type=float, default=0.25)
    parser.add_argument("--eval-samples", type=int, default=2000, help="first N of fashion-mnist:test")
    parser.add_argument("--latency-eta", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=300, help="timed calls per model per round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--max-minutes", type=float, default=20.0, help="skip eta groups that would not fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="schemes")
    parser.add_argument("--runs", default="", help="only these scheme:method pairs, e.g. auto:cobla,tucker2:cobla")
    args = parser.parse_args()
    etas = [float(e) for e in args.etas.split(",") if e]
    runs = [tuple(r.split(":")) for r in args.runs.split(",") if r] or RUNS
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()
    loaded = reference_model()
    train = load_dataset("fashion-mnist:train")
    test = Subset(load_dataset("fashion-mnist:test"), range(args.eval_samples))
    rows, skipped, latency_models = [], [], {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_schemes_"))
    print("| scheme | method | eta | MAC ratio | params ratio | top-1 orig | compressed | fine-tuned | compress s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for eta in etas:
        elapsed = time.perf_counter() - t_start
        per_run = elapsed / len(rows) if rows else 0.0
        if rows and elapsed + per_run * len(runs) > 60 * args.max_minutes:
            skipped.append({"eta": eta, "reason": f"estimated {per_run * len(runs):.0f} s more would pass "
                                                  f"--max-minutes {args.max_minutes} ({elapsed:.0f} s elapsed)"})
            print(f"skipping eta {eta}: {skipped[-1]['reason']}", flush=True)
            continue
        for scheme, method in runs:
            row, model = compress_row(loaded.module, scheme, method, eta, train, test, args)
            rows.append(row)
            if eta == args.latency_eta:
                path = tmp / f"{scheme}_{method}.onnx"
                edgecomp.convert(model, path, input_shape=INPUT_SHAPE)
                latency_models[(scheme, method)] = path
            print(f"| {scheme} | {method} | {eta} | {row['mac_ratio']:.3f} | {row['param_ratio']:.3f} | "
                  f"{row['top1_original']:.4f} | {row['top1_compressed']:.4f} | {row['top1_finetuned']:.4f} | "
                  f"{row['compress_seconds']:.1f} |", flush=True)
    latency = None
    if latency_models:
        paths = {"original": tmp / "original.onnx"}
        edgecomp.convert(loaded.module.eval(), paths["original"], input_shape=INPUT_SHAPE)
        paths.update({f"{s}/{m}": p for (s, m), p in latency_models.items()})
        latency = measure_latency(paths, args.rounds, args.iterations, args.warmup)
        print(f"\nONNX Runtime CPU latency at eta {args.latency_eta} (1 thread, no spinning, batch 1, "
              f"{args.rounds} interleaved rounds; original {latency['original']['median_s'] * 1e6:.1f} us)")
        print("| scheme | method | MAC ratio | latency ratio | min..max round ratio |")
        print("|---|---|---|---|---|")
        for row in rows:
            key = f"{row['scheme']}/{row['method']}"
            if row["eta"] == args.latency_eta and key in latency:
                row["latency_ratio"] = latency[key]["ratio"]
                rr = latency[key]["round_ratios"]
                print(f"| {row['scheme']} | {row['method']} | {row['mac_ratio']:.3f} | {row['latency_ratio']:.3f} | "
                      f"{min(rr):.3f}..{max(rr):.3f} |")
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s, load average {os.getloadavg()}")
    import onnxruntime

    write_results(args.out, {
        "note": "top-1 on the first eval_samples of fashion-mnist:test; compress_seconds = analysis + selection + "
                "build (report timings total_s); latency_ratio = median of per-round medians / the "
                "original's, ONNX Runtime CPU, 1 intra-op thread, spinning off, batch 1",
        "edgecomp": edgecomp.__version__ if hasattr(edgecomp, "__version__") else None,
        "onnxruntime": onnxruntime.__version__, "load_average_start": load_at_start,
        "load_average": os.getloadavg(),
        "etas": etas, "finetune_epochs": args.finetune_epochs, "eval_samples": args.eval_samples,
        "cobla": COBLA_QUICK, "seed": args.seed, "memory_budget": "inf", "latency_eta": args.latency_eta,
        "rounds": args.rounds, "iterations": args.iterations, "warmup": args.warmup,
        "skipped": skipped, "total_seconds": total, "rows": rows, "latency": latency,
    })


if __name__ == "__main__":
    main()
