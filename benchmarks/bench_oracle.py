"""COBLA's loss/gradient oracle (edgecomp.compression.oracle) on the Fashion-MNIST reference CNN: seconds per
gradient and per loss-only call for each speed switch against the default, and short COBLA runs with the
dynamic sample size (Byrd et al. 2012) against the fixed 5% sample.

    python benchmarks/bench_oracle.py [--parts calls,cobla] [--repeats 5] [--max-iter 10]

calls: every repeat draws a new sub-sample (iteration index = repeat) and runs each variant, in a shuffled
order, through one SQP iteration's pattern: a gradient at the iterate (the sub-sample is new: "grad_first"),
a loss-only call and a gradient at trial points on the same sub-sample ("loss", "grad_again"). The machine's
cores are shared, so the ratios to the default within a repeat are what to read (medians over repeats).
Labelled data (cross-entropy) and the same images without labels (distillation from the original model).
cobla: compress(method="cobla", CoblaOptions(max_iter=...)) with the oracle's switches passed by swapping
the class cobla.py builds (edgecomp.compression.cobla.MaskLossOracle; "free masks" also sets the oracle's
test_indices to the masks not fixed by shrinking, which cobla.py does not do yet): wall time, oracle time, images
through the network per kind of call (machine-independent work), sample size per iteration, top-1 on the
test set before fine-tuning, MAC and parameter ratios.

Writes benchmarks/results/oracle.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from common import RESULTS, reference_model, write_results

import edgecomp.compression.cobla as cobla_module
import edgecomp.ranks.cobla as sqp_package
from edgecomp.compression.cobla import CoblaOptions, heuristic_masks
from edgecomp.compression.masked import masked_model, sequential_split
from edgecomp.compression.methods import Budgets, compress, split_heldout
from edgecomp.compression.oracle import MaskLossOracle
from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.data import SubsetDataset, load_dataset
from edgecomp.finetune import evaluate
from edgecomp.graph import analyze_model
from edgecomp.ranks.baselines import BASELINES

SHAPE = (1, 1, 28, 28)
FAST = {"inference_mode": True, "shared_weights": True, "cache_sample": True, "cache_upstream": True,
        "fold_batchnorm": True}
CALL_VARIANTS = {
    "default": {},
    "inference_mode": {"inference_mode": True},
    "shared_weights": {"shared_weights": True},
    "cache_sample": {"cache_sample": True},
    "fold_batchnorm": {"fold_batchnorm": True},
    "all": FAST,
}
COBLA_VARIANTS = {  # name: (oracle kwargs, norm test on the free masks only, as cobla.py would wire it)
    "default": ({}, False),
    "fast": (FAST, False),
    "fast+dynamic": ({**FAST, "dynamic": True}, False),
    "fast+dynamic(free masks)": ({**FAST, "dynamic": True}, True),
}


def _setup(model, data, eta: float, seed: int):
    cost = analyze_model(model, SHAPE, "spatial")
    spectra = compute_spectra(model, cost)
    problem = build_problem(cost, spectra, eta * cost.total_macs, eta * cost.total_params * 4)
    order = [layer.name for layer in problem.layers]
    train_idx, _ = split_heldout(len(data), 0.1, seed)
    m = heuristic_masks(problem, BASELINES["pos-cvx"](problem).ranks)
    return (lambda: masked_model(model, cost, spectra, order)), train_idx, m, order  # fold_batchnorm edits its own


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is less disturbed by other users of the cores."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_calls(model, data, args) -> dict:
    unlabeled = SubsetDataset(data, np.arange(len(data)), name="fashion-mnist (labels dropped)")
    unlabeled.has_labels = False
    make_masked, train_idx, m, order = _setup(model, data, args.eta, args.seed)
    rng = np.random.default_rng(args.seed)
    trial = np.clip(m - 0.1 * rng.random(m.size), 0.0, 1.0)
    out = {"masked_layers": order, "first_masked_layer": order[0],
           "upstream_split": sequential_split(make_masked()[0]) is not None}
    t_norm = []
    for loss_name, dataset in (("cross_entropy", data), ("distillation", unlabeled)):
        oracles = {name: MaskLossOracle(*make_masked(), dataset, sample=args.sample, seed=args.seed, teacher=model,
                                        indices=train_idx, **kw) for name, kw in CALL_VARIANTS.items()}
        out["folded_batchnorms"] = oracles["fold_batchnorm"].folded
        times: dict[str, dict[str, list[tuple[float, float]]]] = {
            name: {"grad_first": [], "loss": [], "grad_again": []} for name in oracles}
        for rep in range(args.repeats):
            for name in rng.permutation(list(oracles)):
                oracle = oracles[name]
                times[name]["grad_first"].append(_timed(lambda: oracle(m, rep)))
                times[name]["loss"].append(_timed(lambda: oracle.loss(trial, rep)))
                times[name]["grad_again"].append(_timed(lambda: oracle(trial, rep)))
            idx = oracles["default"].indices(rep)
            x = data.get_batch(idx)[0]
            with torch.no_grad():  # everything upstream of the first masked layer (features.0.0): Normalize
                t_norm.append(_timed(lambda: model.normalize(x))[1])
            print(f"{loss_name} repeat {rep} (CPU s, grad_first/loss/grad_again): " + ", ".join(
                f"{n} " + "/".join(f"{times[n][kind][-1][1]:.2f}" for kind in ("grad_first", "loss", "grad_again"))
                for n in oracles), flush=True)
        base = times["default"]
        out[loss_name] = {
            "samples_per_call": oracles["default"].n_sample,
            "variants": {name: {kind: _summary(ts, base[kind]) for kind, ts in series.items()}
                         for name, series in times.items()},
        }
    out["upstream_normalize_cpu_s"] = statistics.median(t_norm)
    return out


def _summary(ts: list[tuple[float, float]], base: list[tuple[float, float]]) -> dict:
    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        out[f"{clock}_median_s"] = statistics.median(t[i] for t in ts)
        out[f"{clock}_median_ratio_to_default"] = statistics.median(t[i] / b[i] for t, b in zip(ts, base))
        out[f"{clock}_s"] = [t[i] for t in ts]
    return out


class _Recorder:
    """The oracle class cobla.py builds, with extra constructor kwargs, counting the images it runs."""

    def __init__(self, kwargs: dict):
        self.kwargs, self.oracles, self.images = kwargs, [], {"grad": 0, "loss": 0}
        recorder = self

        class Oracle(MaskLossOracle):
            def __init__(self, *a, **kw):
                super().__init__(*a, **{**kw, **recorder.kwargs})
                recorder.oracles.append(self)

            def _evaluate(self, m, indices, grad, size, per_chunk):
                recorder.images["grad" if grad else "loss"] += len(indices)
                return super()._evaluate(m, indices, grad, size, per_chunk)

        self.cls = Oracle


def bench_cobla(model, data, test, args) -> list[dict]:
    cost = analyze_model(model, SHAPE, "spatial")
    budgets = Budgets(args.eta * cost.total_macs, args.eta * cost.total_params * 4, "fp32")
    rows = []
    original, original_solve = cobla_module.MaskLossOracle, sqp_package.solve_relaxed

    def solve_on_free_masks(problem, oracle, *args, fixed=None, **kwargs):
        if fixed is not None:
            oracle.test_indices = np.flatnonzero(fixed == -1)
        return original_solve(problem, oracle, *args, fixed=fixed, **kwargs)

    try:
        for rep in range(args.cobla_repeats):
            for name, (kwargs, free_only) in COBLA_VARIANTS.items():
                recorder = _Recorder(kwargs)
                cobla_module.MaskLossOracle = recorder.cls
                sqp_package.solve_relaxed = solve_on_free_masks if free_only else original_solve
                t0, c0 = time.perf_counter(), time.process_time()
                result = compress(model, SHAPE, budgets, method="cobla", data=data,
                                  cobla=CoblaOptions(max_iter=args.max_iter, seed=args.seed))
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                info = result.selection.info
                oracle = recorder.oracles[0]
                row = {
                    "variant": name, "repeat": rep, "kwargs": kwargs, "norm_test_on_free_masks": free_only, "seconds": seconds, "cpu_seconds": cpu,
                    "oracle_seconds": info["oracle_seconds"], "oracle_calls": info["oracle_calls"],
                    "images": recorder.images, "sqp_iterations": info["sqp_iterations"],
                    "sqp_reason": info["sqp_reason"], "sample_sizes": oracle.sample_sizes,
                    "norm_tests": [vars(t) for t in oracle.norm_tests],
                    "top1": evaluate(result.model, test)["top1"],
                    "mac_ratio": result.macs / cost.total_macs, "param_ratio": result.params / cost.total_params,
                    "ranks": result.ranks,
                }
                rows.append(row)
                print(f"cobla {name:25} {seconds:7.1f}s (CPU {cpu:7.1f}s) oracle {row['oracle_seconds']:6.1f}s "
                      f"images {row['images']} it {row['sqp_iterations']} ({row['sqp_reason']}) "
                      f"top1 {row['top1']:.4f} macs {row['mac_ratio']:.3f} sizes {row['sample_sizes']}", flush=True)
    finally:
        cobla_module.MaskLossOracle, sqp_package.solve_relaxed = original, original_solve
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="calls,cobla")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample", type=float, default=0.05)
    parser.add_argument("--eta", type=float, default=0.3)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--cobla-repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    parser.add_argument("--out", default="oracle")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    model = reference_model().module.eval()
    data = load_dataset("fashion-mnist:train")
    previous = RESULTS / f"{args.out}.json"
    payload = {}
    if previous.exists():  # a part not run this time keeps its last results
        payload = {k: v for k, v in json.loads(previous.read_text()).items() if k in ("calls", "cobla")}
    settings = {**vars(args), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if "calls" in parts:
        payload["calls"] = {"settings": settings, **bench_calls(model, data, args)}
        write_results(args.out, payload)
    if "cobla" in parts:
        test = load_dataset("fashion-mnist:test")
        payload["cobla"] = {"settings": settings, "reference_top1": evaluate(model, test)["top1"],
                            "runs": bench_cobla(model, data, test, args)}
        write_results(args.out, payload)


if __name__ == "__main__":
    main()
