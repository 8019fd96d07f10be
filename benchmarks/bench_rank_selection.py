"""Rank selection on the Fashion-MNIST reference CNN: top-1 test accuracy BEFORE fine-tuning of every
method at eta in {0.3..0.7} (both budgets = eta x original) for both schemes, COBLA's wall time, and
COBLA with a 5% sub-sampled gradient vs the full-batch gradient.

    python benchmarks/bench_rank_selection.py [--etas 0.3,0.4,0.5,0.6,0.7] [--full-batch-etas 0.3,0.5]

Writes benchmarks/results/rank_selection.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

from common import reference_model, write_results

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import Budgets, compress
from edgecomp.data import load_dataset
from edgecomp.finetune import evaluate
from edgecomp.graph import analyze_model

BUDGETED = ["cobla", "uniform", "cptv", "pos-greedy", "pos-cvx"]
UNBUDGETED = ["vbmf", "gavish-donoho"]


def run(method, model, shape, eta, scheme, train, test, cobla_options=None):
    cost = analyze_model(model, shape, scheme)
    budgets = Budgets(eta * cost.total_macs, eta * cost.total_params * 4, "fp32")
    t0 = time.perf_counter()
    result = compress(model, shape, budgets, method=method, scheme=scheme, data=train, cobla=cobla_options)
    seconds = time.perf_counter() - t0
    acc = evaluate(result.model, test)["top1"]
    info = result.selection.info
    return {
        "method": method,
        "scheme": scheme,
        "eta": eta,
        "top1": acc,
        "mac_ratio": result.macs / cost.total_macs,
        "param_ratio": result.params / cost.total_params,
        "seconds": seconds,
        "ranks": result.ranks,
        "sqp_iterations": info.get("sqp_iterations"),
        "sqp_reason": info.get("sqp_reason"),
        "oracle_seconds": info.get("oracle_seconds"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etas", default="0.3,0.4,0.5,0.6,0.7")
    parser.add_argument("--schemes", default="spatial,channel")
    parser.add_argument("--full-batch-etas", default="0.5")
    parser.add_argument("--max-iter", type=int, default=40)
    parser.add_argument("--full-batch-max-iter", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="rank_selection")
    args = parser.parse_args()
    etas = [float(e) for e in args.etas.split(",") if e]
    loaded = reference_model()
    model, shape = loaded.module.eval(), (1, 1, 28, 28)
    train, test = load_dataset("fashion-mnist:train"), load_dataset("fashion-mnist:test")
    original = evaluate(model, test)["top1"]
    print(f"reference top-1 {original:.4f}")
    rows, full_batch = [], []

    def save():  # after every row, so an interrupted run still leaves its numbers
        write_results(args.out, {"reference_top1": original, "rows": rows, "subsample_vs_full": full_batch,
                                 "max_iter": args.max_iter, "full_batch_max_iter": args.full_batch_max_iter,
                                 "seed": args.seed})

    for scheme in args.schemes.split(","):
        for eta in etas:
            for method in BUDGETED:
                opts = CoblaOptions(max_iter=args.max_iter, seed=args.seed) if method == "cobla" else None
                row = run(method, model, shape, eta, scheme, train, test, opts)
                rows.append(row)
                save()
                print(f"{scheme:8} eta={eta:.1f} {method:12} top1={row['top1']:.4f} macs={row['mac_ratio']:.3f} "
                      f"params={row['param_ratio']:.3f} {row['seconds']:.1f}s", flush=True)
        for method in UNBUDGETED:
            row = run(method, model, shape, 1.0, scheme, train, test)
            rows.append(row)
            save()
            print(f"{scheme:8} (unbudgeted) {method:12} top1={row['top1']:.4f} macs={row['mac_ratio']:.3f} params={row['param_ratio']:.3f}")
    for eta in [float(e) for e in args.full_batch_etas.split(",") if e]:
        for sample in (0.05, 1.0):
            opts = CoblaOptions(max_iter=args.full_batch_max_iter, seed=args.seed, sample=sample)
            row = run("cobla", model, shape, eta, "spatial", train, test, opts)
            row["sample"] = sample
            full_batch.append(row)
            save()
            print(f"cobla spatial eta={eta:.1f} sample={sample} top1={row['top1']:.4f} {row['seconds']:.1f}s", flush=True)
    save()


if __name__ == "__main__":
    main()
