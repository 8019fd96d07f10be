"""Measure the LC algorithm on the reference Fashion-MNIST model (zoo:fmnist_cnn + shipped weights).

    python benchmarks/lc_fmnist.py --preset default [--preset toolkit ...] [--mac-fraction 0.25]
                                   [--param-fraction 0.35] [--scheme spatial] [--finetune-baseline]

For each preset (a mu schedule) it runs run_lc with ranks chosen in every C step under the budgets
(fractions of the reference model's MACs and parameters), evaluates the compressed model on
fashion-mnist:test and records the LC path (per mu: loss, ||w - Delta(Theta)||, ranks, accuracy of
Delta(Theta) on a test subset). --finetune-baseline also fine-tunes the direct compression
(Delta(Theta_0) at the ranks of the first C step) for the same number of SGD steps, the baseline LC
must beat. Results: benchmarks/cache/lc_fmnist.json (one record per preset, appended by name).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from edgecomp.data import load_dataset, subset
from edgecomp.finetune import evaluate, train
from edgecomp.graph import analyze_model
from edgecomp.io import write_json
from edgecomp.lc import run_lc
from edgecomp.models import load_model

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "edgecomp" / "weights" / "fmnist_cnn.safetensors"
OUT = ROOT / "benchmarks" / "cache" / "lc_fmnist.json"

PRESETS = {
    # mu0, a, n_mu, steps_per_mu, lr (SGD, momentum 0.9)
    "default": dict(mu0=1e-1, a=1.5, n_mu=10, steps_per_mu=100, lr=0.01),  # = edgecomp.lc.DEFAULTS (mu0 = reach 1)
    "doubling": dict(mu0=1e-1, a=2.0, n_mu=10, steps_per_mu=100, lr=0.01),
    "small-mu0": dict(mu0=1e-3, a=1.5, n_mu=20, steps_per_mu=50, lr=0.01),
    "toolkit": dict(mu0=1e-4, a=1.1, n_mu=20, steps_per_mu=50, lr=0.01),  # LC toolkit's CIFAR settings
    "too-large": dict(mu0=10.0, a=1.5, n_mu=4, steps_per_mu=100, lr=0.01),  # penalty dominant from the start
}


def finetune_baseline(model, cost, budgets, args, cfg, train_ds, test_ds) -> dict:
    """Direct compression (C step at mu = 0 under the same budgets), then plain fine-tuning."""
    from edgecomp.factor import svd_factors
    from edgecomp.lc import build_compressed, c_step, compressed_layers, rank_problem

    layers = compressed_layers(model, cost)
    weights = {l.name: model.get_submodule(l.name).weight.detach() for l in layers}
    spectra = {l.name: svd_factors(weights[l.name], l.scheme) for l in layers}
    problem = rank_problem(layers, cost, spectra, *budgets)
    dc_model, ranks = build_compressed(model, layers, c_step(weights, layers, problem=problem), args.scheme)
    dc_top1 = evaluate(dc_model, test_ds)["top1"]
    steps = cfg["n_mu"] * cfg["steps_per_mu"]
    start = time.perf_counter()
    ft = train(dc_model, train_ds, epochs=steps / (len(train_ds) // args.batch_size), lr=cfg["lr"],
               batch_size=args.batch_size, weight_decay=0.0, seed=args.seed, keep_best=False)
    return {"direct_compression_top1": dc_top1, "direct_compression_ranks": ranks,
            "dc_finetune_top1": evaluate(dc_model, test_ds)["top1"], "dc_finetune_steps": ft.steps,
            "dc_finetune_seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", choices=sorted(PRESETS), default=None)
    p.add_argument("--scheme", default="spatial", choices=["spatial", "channel"])
    p.add_argument("--mac-fraction", type=float, default=0.25)
    p.add_argument("--param-fraction", type=float, default=0.35)
    p.add_argument("--variant", default="al", choices=["al", "qp"])
    p.add_argument("--lr-schedule", default="cosine", choices=["cosine", "exponential"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-n", type=int, default=2000, help="test images evaluated after every mu")
    p.add_argument("--finetune-baseline", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    ref = load_model("zoo:fmnist_cnn", weights=WEIGHTS)
    train_ds, test_ds = load_dataset("fashion-mnist:train"), load_dataset("fashion-mnist:test")
    probe = subset(test_ds, args.eval_n, seed=0)
    cost = analyze_model(ref.module, ref.input_shape, args.scheme)
    budgets = (args.mac_fraction * cost.total_macs, args.param_fraction * cost.total_params)
    ref_acc = evaluate(ref.module, test_ds)["top1"]
    records = json.loads(args.out.read_text()) if args.out.is_file() else {}

    for name in args.preset or ["default"]:
        cfg = PRESETS[name]
        start = time.perf_counter()
        result = run_lc(ref.module, train_ds, scheme=args.scheme, input_shape=ref.input_shape,
                        problem_budgets=budgets, variant=args.variant, batch_size=args.batch_size,
                        lr_schedule=args.lr_schedule,
                        eval_data=probe, seed=args.seed, tol=1e-3, **cfg)
        final = evaluate(result.model, test_ds)
        built = analyze_model(result.model, ref.input_shape, args.scheme)
        record = {
            "preset": name, **cfg, "lr_schedule": args.lr_schedule, "variant": args.variant, "scheme": args.scheme, "batch_size": args.batch_size,
            "budgets": {"macs": budgets[0], "params": budgets[1]},
            "reference_top1": ref_acc,
            "direct_compression_probe_top1": result.history[0].get("eval_accuracy"),
            "lc_top1": final["top1"], "lc_macs": built.total_macs, "lc_params": built.total_params,
            "ranks": result.ranks, "converged": result.converged, "warning": result.warning,
            "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
            "history": result.history,
        }
        key = f"{name}/{args.scheme}/{args.variant}/{args.lr_schedule}/{args.mac_fraction}/{args.param_fraction}"
        records[key] = record
        write_json(args.out, records)  # kept even if the baseline below is interrupted
        if args.finetune_baseline:
            record.update(finetune_baseline(ref.module, cost, budgets, args, cfg, train_ds, test_ds))
            write_json(args.out, records)
        print(json.dumps({k: v for k, v in record.items() if k != "history"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
