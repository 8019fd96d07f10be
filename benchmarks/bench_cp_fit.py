"""CP fits of real conv kernels: relative error and seconds per iteration of exact ALS vs SPALS (with the
control variate, edgecomp's default) vs plain SPALS (Cheng's estimator), at several ranks, on the
reference model's convs and on zoo:resnet18's 3x3 layer shapes.

    python benchmarks/bench_cp_fit.py [--ranks 8,16,32,64] [--max-iter 50] [--alpha 3] [--resnet-shapes all]
                                      [--largest-iter 100]

Second table (--largest-iter > 0): the fit of each reference conv at its largest rank (the cost model's,
what `--scheme cp` fits), by ALS as before the degeneracy fix (ridge 1e-9, adaptive_ridge=False) and with
the adaptive ridge (edgecomp's default): the largest truncation error of its top-r terms over r, how many
steps r -> r+1 raise it, the largest lambda / ||W||, and the refit at R/4 and R/2 (error of the kept terms
before, after). Single-threaded BLAS is advised (OMP_NUM_THREADS=1): the R x R solves gain nothing from
threads on a shared machine.

No resnet18 weights ship with edgecomp, so its kernels are the zoo's seeded random initialisation
(kaiming normal): nearly full-rank noise, a worst case for any low-rank fit, but the right sizes for
timing. Writes benchmarks/results/cp_fit.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import reference_model, write_results

from edgecomp.factor.cp import cp_als, cp_spals, refit, truncation_profile
from edgecomp.graph.cost import analyze_model
from edgecomp.models.zoo import get_zoo_model

SOLVERS = {
    "als": lambda t, r, a: cp_als(t, r, max_iter=a.max_iter, seed=a.seed),
    "spals": lambda t, r, a: cp_spals(t, r, alpha=a.alpha, max_iter=a.max_iter, seed=a.seed),
    "spals-plain": lambda t, r, a: cp_spals(t, r, alpha=a.alpha, max_iter=a.max_iter, seed=a.seed,
                                            control_variate=False),
}


def kernels(resnet_shapes: str) -> list[tuple[str, str, np.ndarray]]:
    """(source, layer name, kernel [f, c, kh, kw]): every conv of the reference model, then the first
    resnet18 3x3 conv of each distinct shape (`resnet_shapes`: "all", "none" or a count of them)."""
    out = []
    for name, conv in reference_model().module.named_modules():
        if isinstance(conv, torch.nn.Conv2d):
            out.append(("fmnist_cnn", name, conv.weight.detach().double().numpy()))
    seen = set()
    for name, conv in get_zoo_model("resnet18", seed=0).named_modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3) and conv.weight.shape not in seen:
            seen.add(conv.weight.shape)
            out.append(("resnet18 (random init)", name, conv.weight.detach().double().numpy()))
    limit = None if resnet_shapes == "all" else 0 if resnet_shapes == "none" else int(resnet_shapes)
    fmnist = [k for k in out if k[0] == "fmnist_cnn"]
    return fmnist + out[len(fmnist):][:limit]


def largest_rank_rows(max_iter: int, seed: int) -> list[dict]:
    """The second table (module docstring): each reference conv at its largest rank, before/after the fix."""
    module = reference_model().module
    cost = analyze_model(module, (1, 1, 28, 28), "cp")
    rows = []
    print("\n| layer | shape | R | ALS | rel. error at R | max top-r error | rising steps | max lambda/norm | "
          "ridge | refit R/4 before -> after | refit R/2 before -> after | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lc in cost.decomposable:
        if lc.decomposition.scheme != "cp":
            continue
        kernel = module.get_submodule(lc.name).weight.detach().double().numpy()
        rank = lc.decomposition.max_rank
        for label, adaptive in (("before fix (ridge 1e-9)", False), ("adaptive ridge", True)):
            t0 = time.perf_counter()
            fit = cp_als(kernel, rank, max_iter=max_iter, seed=seed, adaptive_ridge=adaptive)
            profile = truncation_profile(kernel, fit)
            halves = sorted({max(1, rank // 4), max(1, rank // 2)})
            refits = {r: refit(kernel, fit, r, max_iter=max_iter, seed=seed, adaptive_ridge=adaptive) for r in halves}
            row = {"layer": lc.name, "shape": list(kernel.shape), "rank": rank, "variant": label,
                   "relative_error": fit.relative_error, "ridge": fit.ridge, "iterations": fit.iterations,
                   "max_truncation_error": float(profile.max()),
                   "rising_steps": int(np.sum(np.diff(profile) > 1e-9)),
                   "max_weight_over_norm": float(fit.weights.max() / np.linalg.norm(kernel)),
                   "truncation_errors": profile.tolist(),
                   "refit": {str(r): {"before": o.before, "after": o.after, "ridge": o.result.ridge}
                             for r, o in refits.items()},
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            cells = " | ".join(f"{o.before:.3f} -> {o.after:.3f}" for o in refits.values())
            print(f"| {lc.name} | {'x'.join(map(str, kernel.shape))} | {rank} | {label} | {fit.relative_error:.4f} | "
                  f"{row['max_truncation_error']:.3f} | {row['rising_steps']} | {row['max_weight_over_norm']:.3g} | "
                  f"{fit.ridge:.3g} | {cells} | {row['seconds']:.1f} |", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="8,16,32,64")
    parser.add_argument("--solvers", default="als,spals,spals-plain")
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--alpha", type=float, default=3.0)
    parser.add_argument("--resnet-shapes", default="all", help='"all", "none" or how many distinct 3x3 shapes')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--largest-iter", type=int, default=100, help="ALS iterations of the largest-rank table "
                                                                         "(0: skip it)")
    parser.add_argument("--out", default="cp_fit")
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",") if r]
    solvers = [s for s in args.solvers.split(",") if s]
    rows = []
    t0 = time.perf_counter()
    print("resnet18 kernels: the zoo's seeded random initialisation (no resnet18 weights ship with edgecomp)")
    print("| model | layer | shape | rank | solver | rel. error | iters | s/iter | KR rows drawn |")
    print("|---|---|---|---|---|---|---|---|---|")
    for source, layer, kernel in kernels(args.resnet_shapes):
        for rank in ranks:
            for solver in solvers:
                fit = SOLVERS[solver](kernel, rank, args)
                drawn = None
                if fit.sampling is not None:
                    drawn = sum(fit.sampling.distinct_rows) / sum(fit.sampling.rows)
                rows.append({
                    "model": source, "layer": layer, "shape": list(kernel.shape), "rank": rank, "solver": solver,
                    "relative_error": fit.relative_error, "iterations": fit.iterations, "converged": fit.converged,
                    "seconds": fit.seconds, "seconds_per_iteration": fit.seconds_per_iteration,
                    "samples_per_update": None if fit.sampling is None else fit.sampling.samples,
                    "distinct_rows_fraction": drawn,
                })
                print(f"| {source} | {layer} | {'x'.join(map(str, kernel.shape))} | {rank} | {solver} | "
                      f"{fit.relative_error:.4f} | {fit.iterations} | {fit.seconds_per_iteration:.4f} | "
                      f"{'-' if drawn is None else f'{drawn:.2f}'} |", flush=True)
    largest = largest_rank_rows(args.largest_iter, args.seed) if args.largest_iter > 0 else []
    write_results(args.out, {
        "note": "resnet18 kernels are the zoo's seeded random initialisation (no resnet18 weights ship); "
                "s/iter = total seconds (start, iterations, final exact error) / iterations",
        "ranks": ranks, "solvers": solvers, "max_iter": args.max_iter, "alpha": args.alpha, "seed": args.seed,
        "largest_iter": args.largest_iter, "total_seconds": time.perf_counter() - t0, "rows": rows,
        "largest_rank_rows": largest,
    })


if __name__ == "__main__":
    main()
