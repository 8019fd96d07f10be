"""How much of a MAC reduction becomes real speed: ONNX Runtime CPU latency of the original vs the
COBLA-compressed model at eta in {0.3, 0.5, 0.7} (both budgets = eta x original), for the
Fashion-MNIST reference CNN and zoo:resnet18 at 224x224, measured by the harness on this host.
Also the end-to-end COBLA time on zoo:resnet18 with random-input gradients (distillation loss
against the original model, since random inputs have no labels).

Latency depends only on the layer shapes, so for the Fashion-MNIST model the COBLA ranks are
taken from benchmarks/results/rank_selection.json (run bench_rank_selection.py first) when it has
them, instead of running COBLA again.

    python benchmarks/bench_latency_vs_macs.py [--etas 0.3,0.5,0.7] [--resnet-iter 5]

Writes benchmarks/results/latency_vs_macs.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, reference_model, write_results

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import Budgets, compress
from edgecomp.data import ArrayDataset, load_dataset
from edgecomp.graph import analyze_model
from edgecomp.models import get_zoo_model
from edgecomp.profiles import load_profile
from edgecomp.exporters import export_onnx

from edgecomp import runtime
from edgecomp.runtime import MeasureSettings


def p50_ms(model, shape, workdir: Path, name: str, settings) -> dict:
    path = export_onnx(model.eval(), workdir / f"{name}.onnx", shape).path
    report = runtime.profile_artifact(path, load_profile("x86-host"), target="local", settings=settings)
    lat = report.latency
    return {"p50_ms": lat.p50, "p90_ms": lat.p90, "mean_ms": lat.mean, "cv": lat.cv, "n": lat.n}


def known_ranks(eta: float) -> dict | None:
    """COBLA spatial ranks for the reference CNN at `eta` from a rank_selection.json run, if any."""
    path = RESULTS / "rank_selection.json"
    if not path.is_file():
        return None
    for row in json.loads(path.read_text())["rows"]:
        if row["method"] == "cobla" and row["scheme"] == "spatial" and abs(row["eta"] - eta) < 1e-9:
            return row["ranks"]
    return None


def compressed(model, shape, eta, data, options, cost, reuse: bool):
    ranks = known_ranks(eta) if reuse else None
    if ranks is not None:
        from edgecomp.compression.problem import build_problem, compute_spectra
        from edgecomp.factor import factorize_model

        problem = build_problem(cost, compute_spectra(model, cost), float("inf"), float("inf"))
        factored = {l.name: ranks[l.name] for l in problem.layers if l.is_factored(ranks[l.name])}
        built = factorize_model(model, factored, "spatial")
        return built, problem.cost([ranks[l.name] for l in problem.layers]), {"ranks_from": "rank_selection.json"}
    budgets = Budgets(eta * cost.total_macs, eta * cost.total_params * 4, "fp32")
    t0 = time.perf_counter()
    result = compress(model, shape, budgets, method="cobla", scheme="spatial", data=data, cobla=options)
    info = {"cobla_seconds": time.perf_counter() - t0, "cobla_iterations": result.selection.info.get("sqp_iterations"),
            "oracle_seconds": result.selection.info.get("oracle_seconds"), "n_masks": result.selection.info.get("n_masks")}
    return result.model, (result.macs, result.params), info


def bench_model(label, model, shape, data, etas, options, settings, workdir, reuse=False) -> list[dict]:
    cost = analyze_model(model, shape, "spatial")
    rows = [{"model": label, "eta": 1.0, "mac_ratio": 1.0, **p50_ms(model, shape, workdir, f"{label}-orig", settings)}]
    for eta in etas:
        if reuse and known_ranks(eta) is None:
            print(f"{label}: no COBLA ranks for eta={eta} in rank_selection.json; skipped (run that benchmark first)")
            continue
        built, (macs, params), info = compressed(model, shape, eta, data, options, cost, reuse)
        seconds = info.get("cobla_seconds", float("nan"))
        row = {"model": label, "eta": eta, "mac_ratio": macs / cost.total_macs,
               "param_ratio": params / cost.total_params, **info,
               **p50_ms(built, shape, workdir, f"{label}-{eta}", settings)}
        row["latency_ratio"] = row["p50_ms"] / rows[0]["p50_ms"]
        rows.append(row)
        print(f"{label:10} eta={eta:.1f} MACs x{row['mac_ratio']:.3f} latency x{row['latency_ratio']:.3f} "
              f"(p50 {row['p50_ms']:.3f} ms vs {rows[0]['p50_ms']:.3f}); COBLA {seconds:.1f}s", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etas", default="0.3,0.5,0.7")
    parser.add_argument("--fmnist-iter", type=int, default=10)
    parser.add_argument("--resnet-iter", type=int, default=5)
    parser.add_argument("--resnet-samples", type=int, default=32)
    args = parser.parse_args()
    etas = [float(e) for e in args.etas.split(",")]
    settings = MeasureSettings(warmup_s=0.5, iterations=300, min_duration_s=2.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fmnist = reference_model().module.eval()
        rows += bench_model("fmnist_cnn", fmnist, (1, 1, 28, 28), load_dataset("fashion-mnist:train"), etas,
                            CoblaOptions(max_iter=args.fmnist_iter), settings, workdir, reuse=True)
        write_results("latency_vs_macs", {"rows": rows})
        resnet = get_zoo_model("resnet18").eval()
        rng = np.random.default_rng(0)
        random_inputs = ArrayDataset(rng.standard_normal((args.resnet_samples, 3, 224, 224), dtype=np.float32), None,
                                     name="random 224x224")
        torch.manual_seed(0)
        rows += bench_model("resnet18", resnet, (1, 3, 224, 224), random_inputs, etas,
                            CoblaOptions(max_iter=args.resnet_iter, sample=1.0, batch_size=8, draws=4),
                            settings, workdir)
    write_results("latency_vs_macs", {"rows": rows, "settings": vars(args)})


if __name__ == "__main__":
    main()
