"""COBLA SQP solver's own time per iteration (oracle excluded) at n = 1k, 5k, 20k, 50k masks.

    python benchmarks/bench_cobla_solver.py [--sizes 1000,5000,20000,50000] [--iters 30] [--blas-threads 1]

Problems look like conv nets: layers of 3x3 convs (64..1024 channels, feature maps shrinking
with depth) factored as a k x k conv into r channels followed by a 1x1 conv, so per rank
macs = H*W*(C_in*k*k + C_out) and params = C_in*k*k + C_out; spectra decay like a power law
with noise. Budgets: 35% of the original MACs, 40% of the parameters, so both rows bind.

The oracle is a cheap synthetic, non-quadratic loss (a per-layer log of the discarded spectral
energy plus a rank-8 coupling term), evaluated deterministically; its time is excluded from
the per-iteration solver time that `solve_relaxed` records (L-BFGS update, QP solve with its
projections, KKT residual, bookkeeping). Reported per size: the median and p90 of the solver
seconds per iteration, the median QP iterations, projection fallbacks, and the final state.

BLAS runs single-threaded by default (--blas-threads) so the numbers measure one core and are
not distorted by other processes on a shared machine (the 1-minute load average is recorded
with the results). Writes
benchmarks/results/cobla_solver.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,20000,50000")
    ap.add_argument("--iters", type=int, default=30, help="SQP iterations per size")
    ap.add_argument("--blas-threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # must happen before numpy loads OpenBLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402

from edgecomp.ranks.cobla import SQPOptions, solve_relaxed  # noqa: E402
from edgecomp.ranks.problem import LayerSpectrum, RankProblem  # noqa: E402

CHANNELS = (64, 128, 256, 512, 1024)


def conv_net_problem(n_masks: int, rng: np.random.Generator) -> RankProblem:
    """Layers of a deep conv net whose matricised weights have n_masks singular values in total."""
    layers, total, depth = [], 0, 0
    while total < n_masks:
        stage = min(depth // 4, len(CHANNELS) - 1)
        c_in = CHANNELS[max(stage - (depth % 4 == 0), 0)]
        c_out = CHANNELS[stage]
        k, hw = 3, max(56 >> stage, 7)
        rows, cols = c_out, c_in * k * k
        K = min(rows, cols, n_masks - total)
        j = np.arange(1, K + 1)
        sigma = np.sort(j ** -rng.uniform(0.4, 1.2) * rng.uniform(0.5, 3.0) * np.exp(rng.normal(0, 0.05, K)))[::-1]
        layers.append(LayerSpectrum(
            f"conv{depth}", sigma, compute_per_rank=float(hw * hw * (cols + rows)),
            params_per_rank=float(cols + rows), original_compute=float(hw * hw * rows * cols),
            original_params=float(rows * cols + rows), bias_params=float(rows), shape=(rows, cols)))
        total += K
        depth += 1
    probe = RankProblem(tuple(layers), 1.0, 1.0, fixed_compute=1e6, fixed_params=1e4)
    macs, params = probe.original_cost
    return probe.with_budgets(0.35 * macs, 0.40 * params)


def synthetic_oracle(problem: RankProblem, rng: np.random.Generator):
    """E(m) = sum_i w_i log(1 + q_i(m)) + 1/2 ||V'(1 - m)||^2 / n, q_i = discarded energy of layer i."""
    n = problem.n_masks
    sig2 = np.concatenate([l.sigma**2 / np.sum(l.sigma**2) for l in problem.layers])
    layer_of = np.repeat(np.arange(len(problem.layers)), problem.max_ranks)
    w = rng.uniform(0.5, 2.0, len(problem.layers))
    V = rng.normal(size=(n, 8)) * np.sqrt(sig2)[:, None]

    def oracle(m, k):
        u = 1.0 - m
        q = np.bincount(layer_of, weights=sig2 * u * u, minlength=w.size)
        c = V.T @ u
        loss = float(np.sum(w * np.log1p(q))) + 0.5 * float(c @ c) / n
        grad = -(w / (1.0 + q))[layer_of] * 2.0 * sig2 * u - (V @ c) / n
        return loss, grad

    return oracle


def bench(n: int, iters: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + n)
    problem = conv_net_problem(n, rng)
    oracle = synthetic_oracle(problem, rng)
    opts = SQPOptions(max_iter=iters, step_tol=0.0, kkt_tol=0.0)  # run every iteration
    res = solve_relaxed(problem, oracle, options=opts)
    steps = [h for h in res.history if h["step_size"] > 0 or h["qp_iterations"]]
    per_iter = np.array([h["solver_s"] for h in steps])
    a_c, a_m, c_c, c_m = problem.linear_costs()
    return {
        "n_masks": problem.n_masks,
        "n_layers": len(problem.layers),
        "iterations": res.iterations,
        "reason": res.reason,
        "solver_s_per_iter_median": float(np.median(per_iter)),
        "solver_s_per_iter_p90": float(np.percentile(per_iter, 90)),
        "solver_s_total": res.timings["solver_s"],
        "oracle_s_total": res.timings["oracle_s"],
        "qp_iterations_median": float(np.median([h["qp_iterations"] for h in steps])),
        "backtracks_total": int(sum(h["backtracks"] for h in steps)),
        "projection_fallbacks": res.timings["projection_fallbacks"],
        "loss_start": steps[0]["loss"] if steps else res.loss,
        "loss_final": res.loss,
        "mac_use": (float(a_c @ res.masks) + c_c) / problem.compute_budget,
        "param_use": (float(a_m @ res.masks) + c_m) / problem.param_budget,
    }


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import write_results

    sizes = [int(s) for s in ARGS.sizes.split(",") if s]
    rows = []
    for n in sizes:
        row = bench(n, ARGS.iters, ARGS.seed)
        rows.append(row)
        print(f"n={row['n_masks']}: {row['solver_s_per_iter_median'] * 1e3:.1f} ms/iter", flush=True)
    print()
    print("| masks | layers | iters | solver ms/iter (median) | p90 | QP iters (median) | loss start -> final | MAC / param use |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['n_masks']} | {r['n_layers']} | {r['iterations']} | {r['solver_s_per_iter_median'] * 1e3:.1f} "
              f"| {r['solver_s_per_iter_p90'] * 1e3:.1f} | {r['qp_iterations_median']:.0f} "
              f"| {r['loss_start']:.4g} -> {r['loss_final']:.4g} | {r['mac_use']:.3f} / {r['param_use']:.3f} |")
    write_results("cobla_solver", {"blas_threads": ARGS.blas_threads, "iterations_requested": ARGS.iters,
                                   "load_average_1min": os.getloadavg()[0],
                                   "options": {"qp_max_iter": SQPOptions().qp_max_iter,
                                               "qp_rtol": SQPOptions().qp_rtol,
                                               "history": SQPOptions().history},
                                   "results": rows})


if __name__ == "__main__":
    main()
