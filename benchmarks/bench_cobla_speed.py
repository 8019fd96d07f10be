"""COBLA's cost at its old and new default settings on the Fashion-MNIST reference CNN (spatial SVD, both
budgets = eta x original): wall time, CPU time, SQP iterations, stop reason and top-1 before fine-tuning.

    python benchmarks/bench_cobla_speed.py [--etas 0.3,0.5] [--threads 2]

Per eta, in one process (the machine is shared and noisy; CPU seconds are reported beside wall time):
 1. "new": edgecomp's compress() with CoblaOptions() (the current defaults);
 2. "old": the settings before benchmarks/bench_cobla_speed.py (max_iter 40, 16 draws, each scored on the
    whole held-out set, no "allocation stable" stop), recording the SQP iterate after every iteration;
 3. "sweep": the old run's trajectory replayed under other stopping rules. The SQP's steps do not depend on
    when it stops (sub-samples are seeded by iteration), so stopping after k iterations yields the old run's
    k-th iterate. Each distinct k is rounded with the new rounding and built; its wall time is the old run's
    time up to k plus the measured rounding time.

Writes benchmarks/results/cobla_speed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import reference_model, write_results

from edgecomp.compression.cobla import CoblaOptions, floor_product_loss, heldout_parts, round_on_heldout
from edgecomp.compression.masked import masked_model
from edgecomp.compression.methods import Budgets, compress, split_heldout
from edgecomp.compression.oracle import MaskLossOracle
from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.data import load_dataset
from edgecomp.factor.build import factorize_model
from edgecomp.finetune import evaluate
from edgecomp.graph import analyze_model
from edgecomp.ranks.cobla import kept_components

SHAPE = (1, 1, 28, 28)
# The defaults before this benchmark; stable_tol 0.5 / rtol 0 fix the unit of the recorded allocation_change.
OLD = dict(max_iter=40, draws=16, stable_iters=0, stable_tol=0.5, stable_rtol=0.0, screen=0)
RULES = [(tol, iters) for tol in (0.5, 0.1, 0.02) for iters in (2, 3)]  # expected ranks only
LOSS_RULES = [(rtol, iters) for rtol in (0.002, 0.005, 0.01, 0.02) for iters in (2, 3, 4)]  # and the product loss
CAPS = (5, 10, 20, 40)


def sources() -> dict:
    """sha256 (first 12) of the files this measures, since several people edit the tree at once."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "edgecomp"
    files = ["compression/cobla.py", "compression/oracle.py", "compression/masked.py", "ranks/cobla/sqp.py",
             "ranks/cobla/rounding.py"]
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12] for name in files}


def timed_compress(model, cost, budgets, train, test, options, callback=None) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    result = compress(model, SHAPE, budgets, method="cobla", scheme="spatial", data=train, cobla=options,
                      callback=callback)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = result.selection.info
    return {
        "wall_s": wall, "cpu_s": cpu, "top1": evaluate(result.model, test)["top1"],
        "mac_ratio": result.macs / cost.total_macs, "param_ratio": result.params / cost.total_params,
        "sqp_iterations": info["sqp_iterations"], "sqp_reason": info["sqp_reason"],
        "sqp_seconds": info["sqp_seconds"], "rounding_seconds": info["rounding_seconds"],
        "oracle_calls": info["oracle_calls"], "loss_only_calls": info.get("sqp_loss_only_calls"),
        "candidates_distinct": info["candidates_distinct"], "candidates_screened": info["candidates_screened"],
        "candidates_full_loss": info["candidates_full_loss"], "ranks": result.ranks,
        "allocation_change": [h.get("allocation_change") for h in info["sqp_history"]],
    }


def stop_iteration(changes: list[float], tol_ratio: float, iters: int, product: list[float] | None = None,
                   rtol: float = 0.0) -> int | None:
    """Iterations taken under "allocation stable" (edgecomp.ranks.cobla.sqp) with tolerance tol_ratio x the
    recorded tau (0.5 rank) and, given the product losses after each iteration, stable_loss_rtol = rtol (the
    start's product loss is not recorded: iteration 1 counts as an improvement)."""
    run, best = 0, float("inf")
    for k, change in enumerate(changes):
        stable = change <= tol_ratio
        if product is not None:
            stable = stable and not product[k] < (1.0 - rtol) * best
            best = min(best, product[k])
        run = run + 1 if stable else 0
        if run >= iters:
            return k + 1
    return None


class Replay:
    """Round and build from a recorded iterate, as run_cobla and compress() do."""

    def __init__(self, model, problem, cost, spectra, train, test, seed=0):
        self.model, self.problem, self.spectra, self.test = model, problem, spectra, test
        train_idx, self.heldout_idx = split_heldout(len(train), 0.1, seed)
        masked, masks = masked_model(model, cost, spectra, [layer.name for layer in problem.layers])
        self.oracle = MaskLossOracle(masked, masks, train, seed=seed, teacher=model, indices=train_idx)

    def floor_loss(self, m_hat: np.ndarray) -> float:
        """The live rule's product loss: held-out loss (screening subset) of the floor rounding's model."""
        if not hasattr(self, "_product_loss"):
            subset = heldout_parts(self.heldout_idx, CoblaOptions())[0]
            self._product_loss = floor_product_loss(self.problem, self.oracle, subset)
        return self._product_loss(m_hat)

    def run(self, m_hat: np.ndarray, options: CoblaOptions) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        sel = round_on_heldout(self.problem, self.oracle, m_hat, self.heldout_idx, options)
        rounding_s, rounding_cpu = time.perf_counter() - t0, time.process_time() - c0
        p = self.problem
        kept = kept_components(p, m_hat, sel.ranks)
        factored = {layer.name: int(r) for layer, r in zip(p.layers, sel.ranks) if layer.is_factored(int(r))}
        built = factorize_model(
            self.model, factored, "spatial", components={layer.name: kept[i] for i, layer in enumerate(p.layers)
                                                         if layer.name in factored},
            scales={layer.name: m_hat[p.offsets[i] + kept[i]] for i, layer in enumerate(p.layers) if layer.name in factored},
            spectra=self.spectra).eval()
        return {"rounding_s": rounding_s, "rounding_cpu_s": rounding_cpu, "top1": evaluate(built, self.test)["top1"],
                "ranks": factored, "candidates_distinct": sel.info["candidates_distinct"],
                "candidates_full_loss": sel.info["candidates_full_loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etas", default="0.3,0.5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="cobla_speed")
    parser.add_argument("--old-max-iter", type=int, default=OLD["max_iter"], help="(smoke tests: fewer)")
    parser.add_argument("--sample", type=float, default=None, help="override both runs' sample (smoke tests)")
    parser.add_argument("--save-trajectories", default=None, help="an .npz for the old runs' iterates")
    args = parser.parse_args()
    OLD["max_iter"] = args.old_max_iter
    extra = {} if args.sample is None else {"sample": args.sample}
    torch.set_num_threads(args.threads)
    loaded = reference_model()
    model = loaded.module.eval()
    train, test = load_dataset("fashion-mnist:train"), load_dataset("fashion-mnist:test")
    cost = analyze_model(model, SHAPE, "spatial")
    spectra = compute_spectra(model, cost)
    new_defaults = CoblaOptions(**extra)
    payload = {"reference_top1": evaluate(model, test)["top1"], "threads": args.threads, "sources": sources(),
               "new_defaults": vars(new_defaults), "old_defaults": OLD, "etas": {}}

    def save():
        write_results(args.out, payload)

    trajectories = {}
    for eta in [float(e) for e in args.etas.split(",") if e]:
        budgets = Budgets(eta * cost.total_macs, eta * cost.total_params * 4, "fp32")
        row = payload["etas"][f"{eta:g}"] = {}
        row["new"] = timed_compress(model, cost, budgets, train, test, CoblaOptions(**extra))
        save()
        print(f"eta={eta:g} new: {row['new']['wall_s']:.0f} s, top-1 {row['new']['top1']:.4f}, "
              f"{row['new']['sqp_iterations']} it ({row['new']['sqp_reason']})", flush=True)

        snapshots, times, cpus = [], [], []
        t0, c0 = time.perf_counter(), time.process_time()

        def record(rec, eta=eta):
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            snapshots.append(rec["masks"])
            if args.save_trajectories:  # as it goes: a run killed midway still leaves its iterates
                trajectories[f"eta_{eta:g}"] = np.array(snapshots)
                np.savez(args.save_trajectories, **trajectories)

        row["old"] = timed_compress(model, cost, budgets, train, test, CoblaOptions(**OLD, **extra), callback=record)
        row["old"]["iteration_end_s"] = times
        row["old"]["iteration_end_cpu_s"] = cpus
        save()
        print(f"eta={eta:g} old: {row['old']['wall_s']:.0f} s, top-1 {row['old']['top1']:.4f}", flush=True)

        problem = build_problem(cost, spectra, budgets.macs, budgets.params)
        replay = Replay(model, problem, cost, spectra, train, test)
        changes = row["old"]["allocation_change"]  # max_i |delta s_i| / 0.5 (OLD's stable_tol, rtol 0)
        t_floor = time.perf_counter()
        sweep = row["sweep"] = {"floor_heldout_loss": [replay.floor_loss(m) for m in snapshots]}
        sweep["floor_loss_s_each"] = (time.perf_counter() - t_floor) / max(1, len(snapshots))
        save()
        stops = {f"tol {tol:g}, {iters} in a row": stop_iteration(changes, tol / 0.5, iters) for tol, iters in RULES}
        stops.update({f"tol 0.5 and loss rtol {rtol:g}, {iters} in a row": stop_iteration(
            changes, 1.0, iters, sweep["floor_heldout_loss"], rtol) for rtol, iters in LOSS_RULES})
        ks = sorted({k for k in stops.values() if k} | {k for k in CAPS if k <= len(snapshots)})
        sweep.update(stops=stops, at={})
        for k in ks:
            result = replay.run(snapshots[k - 1], CoblaOptions())
            # + the product loss at the start and after each iteration, for the rules that use it
            result["estimated_wall_s"] = times[k - 1] + result["rounding_s"]
            result["estimated_wall_s_with_product_loss"] = result["estimated_wall_s"] + (k + 1) * sweep["floor_loss_s_each"]
            sweep["at"][str(k)] = result
            save()
            print(f"eta={eta:g} stop after {k} it: top-1 {result['top1']:.4f}, ~{result['estimated_wall_s']:.0f} s",
                  flush=True)
        last = replay.run(snapshots[-1], CoblaOptions(**OLD))  # the old rounding on the old iterate
        sweep["old_rounding_at_end"] = last
        save()

    print("\n| eta | settings | wall s | CPU s | SQP it | stop | top-1 | MACs | params |")
    print("|---|---|---|---|---|---|---|---|---|")
    for eta, row in payload["etas"].items():
        for name in ("old", "new"):
            r = row[name]
            print(f"| {eta} | {name} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['sqp_iterations']} | {r['sqp_reason']} "
                  f"| {r['top1']:.4f} | {r['mac_ratio']:.3f} | {r['param_ratio']:.3f} |")


if __name__ == "__main__":
    main()
