"""Data-parallel scaling on this machine's CPU (edgecomp.distributed, gloo): images/s of COBLA's
loss/gradient oracle and of fine-tuning steps with 1 and 2 (or --processes) processes.

    python benchmarks/bench_scaling.py [--processes 1,2] [--seconds 20] [--sample 2700] [--batch 256]

oracle: rank 0 asks for dE/dm on a fresh seeded sub-sample of --sample images per call (the default
is COBLA's 5% of the Fashion-MNIST training split), as the SQP does; every rank evaluates its chunks
(edgecomp.compression.oracle). images/s = sample x calls / seconds.
finetune: edgecomp.finetune.train itself, SGD steps on a global batch of --batch images of which each
rank loads and runs its shard; each rank's loss is its shard's summed cross-entropy / the global batch,
then one flat all-reduce of the gradients (edgecomp.distributed.sum_gradients). images/s = batch x
steps / train's own seconds (rank 0 sizes the step count from a warm-up run to take about --seconds).
Each process runs one torch thread (OMP_NUM_THREADS=1, as torchrun sets it).
The reference CNN (shipped weights) on random 28x28 images: throughput does not depend on pixel values.
Writes benchmarks/results/scaling.json (--name: another name, e.g. for a smoke run with --seconds 1).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import tempfile
import time

import numpy as np
import torch
from common import reference_model, write_results


def _model():
    try:
        return reference_model().module.eval()
    except SystemExit:  # no shipped weights: same architecture, random weights (same throughput)
        from edgecomp.models import get_zoo_model

        return get_zoo_model("fmnist_cnn").eval()


def _data(n: int):
    from edgecomp.data import ArrayDataset

    rng = np.random.default_rng(0)
    return ArrayDataset(rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n), name="random",
                        num_classes=10)


def _oracle_rate(dist, args) -> float | None:
    from edgecomp.compression.masked import masked_model
    from edgecomp.compression.oracle import MaskLossOracle
    from edgecomp.compression.problem import compute_spectra
    from edgecomp.graph import analyze_model

    model = _model()
    cost = analyze_model(model, (1, 1, 28, 28), "spatial")
    masked, masks = masked_model(model, cost, compute_spectra(model, cost), [lc.name for lc in cost.decomposable])
    oracle = MaskLossOracle(masked, masks, _data(args.pool), sample=args.sample, batch_size=args.oracle_batch,
                            dist=dist)
    if not dist.is_main:
        oracle.serve()
        return None
    m = np.random.default_rng(1).uniform(0.2, 1.0, masks.value.numel())
    oracle(m, 0)  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        calls += 1
        oracle(m, calls)
    seconds = time.perf_counter() - start
    oracle.finish()
    return args.sample * calls / seconds


def _finetune_rate(dist, args) -> float | None:
    from edgecomp.distributed import broadcast_object
    from edgecomp.finetune import train

    data = _data(args.pool)

    def run(steps: int) -> float:
        """edgecomp.finetune.train itself (the sharded path), `steps` SGD steps; its seconds."""
        epochs = math.ceil(steps * args.batch / len(data)) + 1
        result = train(_model(), data, epochs=epochs, max_steps=steps, lr=0.01, batch_size=args.batch, seed=0,
                       progress=False, dist=dist)
        return result.seconds

    per_step = run(3) / 3  # warm-up (the first optimizer imports torch._dynamo), and the step time
    # rank 0 sizes the timed run, so every rank runs the same number of steps
    steps = broadcast_object(max(3, int(args.seconds / max(per_step, 1e-6))), dist)
    seconds = run(steps)
    return args.batch * steps / seconds if dist.is_main else None


def _worker(rank: int, world: int, port: int, args, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1", EDGECOMP_DIST_BACKEND="gloo")
    torch.set_num_threads(1)
    from edgecomp.distributed import init, shutdown

    dist = init()
    try:
        rates = {"oracle_images_per_s": _oracle_rate(dist, args), "finetune_images_per_s": _finetune_rate(dist, args)}
        if dist.is_main:
            torch.save(rates, out)
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per part and process count")
    parser.add_argument("--sample", type=int, default=2700, help="images per oracle gradient (5%% of 54,000)")
    parser.add_argument("--oracle-batch", type=int, default=256, help="oracle batch (CoblaOptions.batch_size)")
    parser.add_argument("--batch", type=int, default=256, help="global fine-tuning batch")
    parser.add_argument("--pool", type=int, default=6000, help="random images to draw from")
    parser.add_argument("--name", default="scaling", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (int(p) for p in args.processes.split(",")):
            out = os.path.join(tmp, f"{world}.pt")
            torch.multiprocessing.spawn(_worker, args=(world, _free_port(), args, out), nprocs=world, join=True)
            rows.append({"processes": world, **torch.load(out)})
            print(rows[-1])
    base = rows[0]
    for row in rows:
        for key in ("oracle_images_per_s", "finetune_images_per_s"):
            row[key.replace("images_per_s", "speedup")] = row[key] / base[key]
    write_results(args.name, {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
