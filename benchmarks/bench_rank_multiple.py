"""Hardware-friendly ranks (issue 14): what rounding each factored rank down to a multiple costs in accuracy
and gains in time, on the Fashion-MNIST reference model at one MAC budget.

    python benchmarks/bench_rank_multiple.py [--eta 0.5] [--multiples 1,8,16] [--method cobla]
                                             [--eval-samples 10000] [--rounds 7] [--iterations 300]

For each rank multiple (1 = no rounding) the same rank selection runs once (both budgets eta x original,
memory unconstrained, seed 0; COBLA at quick settings, or --method pos-cvx), then its ranks are rounded down
(edgecomp.factor.rank_rounding) before the model is built. Reported per multiple: the ranks before and after
rounding, MAC / params ratios, top-1 before fine-tuning on the first --eval-samples of fashion-mnist:test,
and ONNX Runtime CPU latency of the converted model, timed like bench_schemes.py (its measure_latency: one
process, 1 intra-op thread, spinning off, batch 1, --rounds interleaved rounds with the order rotated, the
median of per-round medians, as a ratio to the original model timed in the same rounds).
Writes benchmarks/results/rank_multiple.json (--out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

from bench_schemes import COBLA_QUICK, INPUT_SHAPE, measure_latency
from common import reference_model, write_results
from torch.utils.data import Subset

import edgecomp
from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import Budgets, compress
from edgecomp.data import load_dataset
from edgecomp.finetune import evaluate
from edgecomp.graph import analyze_model


def run_multiple(module, multiple: int, eta: float, train, test, args) -> tuple[dict, object]:
    cost = analyze_model(module, INPUT_SHAPE, "spatial")
    budgets = Budgets(eta * cost.total_macs, math.inf, "fp32")
    t0 = time.perf_counter()
    result = compress(module, INPUT_SHAPE, budgets, method=args.method, scheme="spatial", data=train,
                      cobla=CoblaOptions(**COBLA_QUICK, seed=args.seed), seed=args.seed, rank_multiple=multiple)
    seconds = time.perf_counter() - t0
    rounding = result.selection.info.get("rank_rounding") or {"layers": []}
    return {
        "rank_multiple": multiple, "eta": eta, "method": args.method,
        "mac_ratio": result.macs / cost.total_macs, "param_ratio": result.params / cost.total_params,
        "within_mac_budget": result.macs <= budgets.macs,
        "top1_before_finetune": evaluate(result.model, test)["top1"],
        "ranks": result.factored, "ranks_before_rounding": {r["name"]: r["before"] for r in rounding["layers"]},
        "compress_seconds": seconds,
    }, result.model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eta", type=float, default=0.5)
    parser.add_argument("--multiples", default="1,8,16")
    parser.add_argument("--method", default="cobla", choices=["cobla", "pos-cvx"])
    parser.add_argument("--eval-samples", type=int, default=10000, help="first N of fashion-mnist:test")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=300, help="timed calls per model per round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="rank_multiple")
    args = parser.parse_args()
    multiples = [int(m) for m in args.multiples.split(",") if m]
    t_start, load_at_start = time.perf_counter(), os.getloadavg()
    loaded = reference_model()
    train = load_dataset("fashion-mnist:train")
    test = Subset(load_dataset("fashion-mnist:test"), range(args.eval_samples))
    tmp = Path(tempfile.mkdtemp(prefix="bench_rank_multiple_"))
    paths = {"original": tmp / "original.onnx"}
    edgecomp.convert(loaded.module.eval(), paths["original"], input_shape=INPUT_SHAPE)
    rows = []
    for multiple in multiples:
        row, model = run_multiple(loaded.module, multiple, args.eta, train, test, args)
        paths[f"x{multiple}"] = tmp / f"multiple_{multiple}.onnx"
        edgecomp.convert(model, paths[f"x{multiple}"], input_shape=INPUT_SHAPE)
        rows.append(row)
    latency = measure_latency(paths, args.rounds, args.iterations, args.warmup)
    print(f"\nFashion-MNIST CNN, {args.method} at eta {args.eta}; ONNX Runtime CPU, 1 thread, spinning off, batch 1, "
          f"{args.rounds} interleaved rounds (original {latency['original']['median_s'] * 1e6:.1f} us)")
    print("| rank multiple | ranks | MAC ratio | top-1 before fine-tuning | latency vs original | min..max round |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        timed = latency[f"x{row['rank_multiple']}"]
        row.update(latency_ratio=timed["ratio"], latency_median_s=timed["median_s"],
                   round_ratios=timed["round_ratios"])
        ranks = ", ".join(f"{v}" for v in row["ranks"].values())
        print(f"| {row['rank_multiple']} | {ranks} | {row['mac_ratio']:.3f} | {row['top1_before_finetune']:.4f} | "
              f"{row['latency_ratio']:.3f} | {min(timed['round_ratios']):.3f}..{max(timed['round_ratios']):.3f} |")
    import onnxruntime

    write_results(args.out, {
        "note": "top-1 before fine-tuning on the first eval_samples of fashion-mnist:test; latency_ratio = median "
                "of per-round medians / the original's, ONNX Runtime CPU, 1 intra-op thread, spinning off, batch 1",
        "onnxruntime": onnxruntime.__version__, "load_average_start": load_at_start, "load_average": os.getloadavg(),
        "eta": args.eta, "method": args.method, "cobla": COBLA_QUICK if args.method == "cobla" else None,
        "seed": args.seed, "memory_budget": "inf", "eval_samples": args.eval_samples, "rounds": args.rounds,
        "iterations": args.iterations, "warmup": args.warmup, "total_seconds": time.perf_counter() - t_start,
        "rows": rows, "latency": latency,
    })


if __name__ == "__main__":
    main()
