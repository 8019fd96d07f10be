"""COBLA with default settings against AIMET's greedy spatial-SVD selection, in one run, on one machine.

    python benchmarks/bench_cobla_vs_aimet.py [--models fmnist_cnn,fmnist_resnet] [--etas 0.3,0.5]
        [--aimet-python /work/aimet-venv/bin/python] [--threads 2]

For each model and target MAC ratio eta, interleaved:
 1. AIMET (its own venv, `benchmarks/aimet/bench_aimet_svd.py --independent`, one eta, 10 candidates, 2,000
    selection images): its achieved MACs and parameters, test top-1 before fine-tuning, and the wall time of
    its `compress_model` call (the per-layer scan included).
 2. edgecomp COBLA with DEFAULT options (`CoblaOptions()`, scheme spatial) in a fresh process of this
    interpreter, budgeted at AIMET's achieved MACs (matched MACs) and AIMET's parameter count (parameter
    memory no higher than AIMET's): the wall time of the `compress()` call (analysis, SVDs, COBLA, rounding
    and the build), its MAC and parameter ratios, and test top-1 before fine-tuning.
Both processes use the same torch thread count. The load average is recorded before each run: this machine
is shared, so only ratios from one run mean anything.

Writes benchmarks/results/cobla_vs_aimet.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WEIGHTS = {
    "fmnist_cnn": ROOT / "edgecomp" / "weights" / "fmnist_cnn.safetensors",
    "fmnist_resnet": ROOT / "benchmarks" / "weights" / "fmnist_resnet.safetensors",
}


def run_aimet(python: str, model: str, eta: float, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="aimet_") as tmp:
        out = Path(tmp) / "aimet.json"
        cmd = [python, str(HERE / "aimet" / "bench_aimet_svd.py"), "--model", model, "--etas", str(eta),
               "--independent", "--threads", str(threads), "--wait-minutes", "0", "--out", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stderr)
        payload = json.loads(out.read_text())
    row = payload["rows"][0]
    return {**row, "reference": payload["reference"], "aimet_version": payload["aimet_version"],
            "torch_version": payload["torch_version"]}


def run_cobla(model: str, macs: float, params: float, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cobla_") as tmp:
        out = Path(tmp) / "cobla.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--models", model, "--macs", repr(macs),
               "--params", repr(params), "--threads", str(threads), "--worker-out", str(out)]
        subprocess.run(cmd, check=True, cwd=HERE, stdout=sys.stderr)
        return json.loads(out.read_text())


def cobla_worker(model_name: str, macs: float, params: float, threads: int, out: Path) -> None:
    """One default COBLA run at the given absolute budgets (this process only)."""
    import torch

    torch.set_num_threads(threads)
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import compress
    from edgecomp.data import load_dataset
    from edgecomp.finetune import evaluate
    from edgecomp.graph import analyze_model
    from edgecomp.models import load_model
    from edgecomp.profiles.profile import Budgets

    model = load_model(f"zoo:{model_name}", str(WEIGHTS[model_name])).module.eval()
    shape = (1, 1, 28, 28)
    train, test = load_dataset("fashion-mnist:train"), load_dataset("fashion-mnist:test")
    cost = analyze_model(model, shape, "spatial")
    budgets = Budgets(macs, params * 4, "fp32")
    options = CoblaOptions()
    t0 = time.perf_counter()
    result = compress(model, shape, budgets, method="cobla", scheme="spatial", data=train, cobla=options)
    seconds = time.perf_counter() - t0
    info = result.selection.info
    from edgecomp.io import to_jsonable, write_json

    write_json(out, to_jsonable({
        "seconds": seconds,
        "mac_ratio": result.macs / cost.total_macs,
        "param_ratio": result.params / cost.total_params,
        "macs": result.macs,
        "params": result.params,
        "test_top1": evaluate(result.model, test)["top1"],
        "reference_top1": evaluate(model, test)["top1"],
        "options": options.__dict__,
        "sqp_iterations": info.get("sqp_iterations"),
        "sqp_reason": info.get("sqp_reason"),
        "oracle_seconds": info.get("oracle_seconds"),
        "gradient_samples": info.get("gradient_samples"),
        "ranks": result.ranks,
        "torch_version": torch.__version__,
    }))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fmnist_cnn,fmnist_resnet")
    parser.add_argument("--etas", default="0.3,0.5")
    parser.add_argument("--aimet-python", default="/work/aimet-venv/bin/python")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="cobla_vs_aimet")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--macs", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--params", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if args.worker:
        cobla_worker(models[0], args.macs, args.params, args.threads, args.worker_out)
        return 0
    for m in models:
        if m not in WEIGHTS:
            parser.error(f"unknown model {m}; choose from {', '.join(WEIGHTS)}")
        if not WEIGHTS[m].is_file():
            sys.exit(f"{WEIGHTS[m]} is missing: see benchmarks/train_reference.py")
    if not Path(args.aimet_python).is_file():
        sys.exit(f"{args.aimet_python} not found: run `bash benchmarks/aimet/setup_venv.sh` first")
    etas = [float(e) for e in args.etas.split(",") if e]

    rows = []
    for model in models:
        for eta in etas:
            load_aimet = os.getloadavg()[0]
            aimet = run_aimet(args.aimet_python, model, eta, args.threads)
            load_cobla = os.getloadavg()[0]
            cobla = run_cobla(model, aimet["macs"], aimet["params"], args.threads)
            rows.append({"model": model, "eta": eta, "aimet": aimet, "cobla": cobla,
                         "loadavg_1min": {"aimet": load_aimet, "cobla": load_cobla}})
            print(f"{model} eta={eta}: AIMET {aimet['seconds']:.1f}s top-1 {aimet['test_top1']:.4f} | COBLA "
                  f"{cobla['seconds']:.1f}s top-1 {cobla['test_top1']:.4f}", file=sys.stderr, flush=True)
            write_results(args.out, {"benchmark": __doc__.splitlines()[0], "threads": args.threads, "rows": rows})

    print("| model | target eta | method | wall s | MAC ratio | param ratio | top-1 before FT | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, c = r["aimet"], r["cobla"]
        print(f"| {r['model']} | {r['eta']:.1f} | AIMET greedy ({a['aimet_version']}, torch {a['torch_version']}) | "
              f"{a['seconds']:.1f} | {a['mac_ratio']:.4f} | {a['param_ratio']:.4f} | {a['test_top1']:.4f} | "
              f"{r['loadavg_1min']['aimet']:.1f} |")
        print(f"| {r['model']} | {r['eta']:.1f} | COBLA default (torch {c['torch_version']}) | {c['seconds']:.1f} | "
              f"{c['mac_ratio']:.4f} | {c['param_ratio']:.4f} | {c['test_top1']:.4f} | {r['loadavg_1min']['cobla']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
