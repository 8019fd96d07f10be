"""COBLA end to end on a GPU against the CPU (issue 15): zoo:resnet18 at 224x224 on real images.

    python benchmarks/bench_gpu.py --device cuda OUT.json [--max-iter 40] [--time-budget 90]
    python benchmarks/bench_gpu.py --device cpu OUT.json --max-iter 2 --time-budget 200
    python benchmarks/bench_gpu.py --compare CUDA.json CPU.json OUT.json
    python benchmarks/bench_gpu.py --device cpu smoke.json --model fmnist_resnet --size 28 --channels 1 \
        --sample 256 --max-iter 1 --draws 2 --time-budget 30 --warm-start none   # smoke test (< 60 s, 2 cores)

A run is `edgecomp.compress(zoo:resnet18, method="cobla", torch_device=..., cobla={max_iter, sample,
draws}, time_budget_s=...)` through the Python API, with a MAC budget of 0.5 and data from
`UpsampledFashionMNIST`: the Fashion-MNIST training split (60000 images; $EDGECOMP_FASHION_MNIST_DIR
may point at a copy of its .gz files) upsampled on the fly (bilinear, one batched interpolate per
oracle batch) to 3 x SIZE x SIZE, the grey channel repeated. The images only need to be real for the
loss to be a loss; throughput does not depend on them. zoo:resnet18 has seeded random weights (no
download) and a 10-class head (its 1000-class fc would refuse 10-class data; the fc is 0.03% of the
MACs), so the chosen ranks mean nothing: only the timings are the result.

Recorded (written to OUT.json after every SQP iteration, so a run stopped by its timeout keeps what it
measured): per SQP iteration its seconds (the first from the end of the start point's gradient; each
includes its line search's oracle calls and the QP) and oracle calls; every oracle call's images,
seconds and kind (gradient or loss only; SQP or rounding); oracle images/s for gradient and loss-only
calls, with and without the first call (cuDNN picks its algorithms then); the seconds spent making
batches (upsampling, on the CPU) inside them; the phases (whole compress, COBLA, SQP, rounding) and
the GPU's peak memory. --compare joins a CUDA and a CPU result into per-iteration and images/s
speed-ups, and what the GPU run's iterations would have taken on the CPU at its measured rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgecomp.data.dataset import EdgeDataset


class UpsampledFashionMNIST(EdgeDataset):
    """Fashion-MNIST (train split) as `channels` x size x size float32 images (the grey channel repeated),
    made per batch on the fly. `make_seconds` sums the time spent making batches (the oracle's timings
    include it)."""

    in_memory = True

    def __init__(self, size: int = 224, pool: int | None = None, channels: int = 3):
        from edgecomp.data.fashion_mnist import load_fashion_mnist

        self.base = load_fashion_mnist("train")
        self.n = len(self.base) if pool is None else min(pool, len(self.base))
        self.size, self.channels = size, channels
        self.name = f"fashion-mnist:train upsampled to {channels}x{size}x{size}"
        self.has_labels = True
        self.num_classes = 10
        self.classes = self.base.classes
        self.sample_shape = (channels, size, size)
        self.make_seconds = 0.0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        x, y = self.get_batch([int(index)])
        return x[0], y[0]

    def get_batch(self, indices):
        start = time.perf_counter()
        x, y = self.base.get_batch(indices)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = x.expand(-1, self.channels, -1, -1).contiguous()
        self.make_seconds += time.perf_counter() - start
        return x, y


class Recorder:
    """Timestamps of the SQP's iterations and of every oracle evaluation, written to `path` as they come."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        self.calls: list[dict] = []
        self.iterations: list[dict] = []
        self.phase = "setup"
        self.marks: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def install(self) -> None:
        import edgecomp.ranks.cobla as cobla_pkg
        from edgecomp.compression.oracle import MaskLossOracle

        recorder, evaluate, solve = self, MaskLossOracle._evaluate_local, cobla_pkg.solve_relaxed

        def timed_evaluate(oracle, m, indices, grad, size, per_chunk, n=None):
            start = time.perf_counter()
            out = evaluate(oracle, m, indices, grad, size, per_chunk, n)  # ends with a host copy: synchronised
            recorder.calls.append({"phase": recorder.phase, "grad": bool(grad), "images": int(len(indices)),
                                   "seconds": time.perf_counter() - start, "end": time.perf_counter() - recorder.t0})
            return out

        def timed_solve(*args, callback=None, **kwargs):
            recorder.phase, recorder.marks["sqp_start"] = "sqp", time.perf_counter()
            state = {"last": None, "calls": 0}

            def on_iteration(record: dict):
                now = time.perf_counter()
                if state["last"] is None:  # iteration 0 starts once the start point's gradient is in
                    first = next(c for c in recorder.calls if c["phase"] == "sqp")
                    state["last"] = recorder.t0 + first["end"]
                    state["calls"] = 1
                sqp_calls = [c for c in recorder.calls if c["phase"] == "sqp"]
                recorder.iterations.append({
                    "iteration": int(record["iteration"]), "seconds": now - state["last"],
                    "oracle_calls": len(sqp_calls) - state["calls"],
                    "images": sum(c["images"] for c in sqp_calls[state["calls"]:]),
                    "loss": float(record["loss"]), "step_size": float(record.get("step_size", float("nan")))})
                state["last"], state["calls"] = now, len(sqp_calls)
                recorder.write()
                return callback(record) if callback is not None else None

            try:
                return solve(*args, callback=on_iteration, **kwargs)
            finally:
                recorder.marks["sqp_end"] = time.perf_counter()
                recorder.phase = "rounding"

        MaskLossOracle._evaluate_local = timed_evaluate
        cobla_pkg.solve_relaxed = timed_solve

    def summary(self) -> dict:
        def rate(calls: list[dict]) -> float | None:
            seconds = sum(c["seconds"] for c in calls)
            return sum(c["images"] for c in calls) / seconds if seconds > 0 else None

        grad = [c for c in self.calls if c["grad"]]
        loss = [c for c in self.calls if not c["grad"]]
        iteration_s = [it["seconds"] for it in self.iterations]
        return {
            "sqp_iterations": len(self.iterations),
            "iteration_seconds_median": statistics.median(iteration_s) if iteration_s else None,
            "iteration_seconds_mean": statistics.fmean(iteration_s) if iteration_s else None,
            "oracle_calls": len(self.calls),
            "gradient_images_per_s": rate(grad),
            "gradient_images_per_s_after_first": rate(grad[1:]),
            "loss_only_images_per_s": rate(loss),
            "oracle_seconds": sum(c["seconds"] for c in self.calls),
            "sqp_seconds": (self.marks["sqp_end"] - self.marks["sqp_start"]) if "sqp_end" in self.marks else None,
        }

    def write(self, **extra) -> None:
        self.meta.update(extra)
        doc = {**self.meta, "summary": self.summary(), "iterations": self.iterations, "oracle_calls": self.calls,
               "elapsed_s": time.perf_counter() - self.t0}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, self.path)


def _environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), tf32_conv=torch.backends.cudnn.allow_tf32,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return env


def run(args) -> dict:
    import edgecomp
    from edgecomp.models.zoo import ZOO
    from edgecomp.torch_device import resolve_torch_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_torch_device(args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"model": f"zoo:{args.model}", "size": args.size, "channels": args.channels, "sample": args.sample, "max_iter": args.max_iter,
                "draws": args.draws, "warm_start": args.warm_start, "time_budget_s": args.time_budget, "mac_budget": args.mac_budget,
                "batch_size": args.batch_size, "pool": args.pool, "torch_device": str(device)}
    recorder = Recorder(out, {"benchmark": "bench_gpu", "settings": settings, "environment": _environment(device),
                              "finished": False})
    recorder.install()
    t_load = time.perf_counter()
    data = UpsampledFashionMNIST(args.size, args.pool, args.channels)
    model = ZOO[args.model].factory(num_classes=10).eval()  # the zoo architecture, a 10-class head, seeded weights
    settings["images"] = len(data)
    recorder.write(load_s=time.perf_counter() - t_load)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = edgecomp.compress(
        model, input_shape=(1, args.channels, args.size, args.size), data=data, mac_budget=args.mac_budget, method="cobla",
        cobla={"max_iter": args.max_iter, "sample": args.sample, "draws": args.draws, "batch_size": args.batch_size,
               "warm_start": None if args.warm_start == "none" else args.warm_start},
        time_budget_s=args.time_budget, torch_device=args.device, seed=0)
    info = result.report.get("selection_info") or {}
    phases = {"compress_s": time.perf_counter() - start, "data_make_s": data.make_seconds,
              **{k: info.get(k) for k in ("sqp_seconds", "rounding_seconds", "oracle_seconds", "oracle_calls",
                                          "sqp_reason", "gradient_samples", "n_masks", "fixed_to_one", "fixed_to_zero",
                                          "warm_start", "time_budget")}}
    extra = {"phases": phases, "finished": True, "mac_ratio": result.report.get("mac_ratio"),
             "report_torch_device": result.report.get("torch_device")}
    if device.type == "cuda":
        extra["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    recorder.write(**extra)
    return json.loads(out.read_text())


def compare(cuda_path: str, cpu_path: str, out: str) -> dict:
    """Per-iteration and images/s speed-ups of the CUDA run over the CPU run, and the GPU run's iterations at
    the CPU's measured gradient rate (what a whole CPU run would take)."""
    gpu, cpu = (json.loads(Path(p).read_text()) for p in (cuda_path, cpu_path))
    g, c = gpu["summary"], cpu["summary"]

    def ratio(a, b):
        return a / b if a and b else None

    cpu_rate = c.get("gradient_images_per_s_after_first") or c.get("gradient_images_per_s")
    projected = (sum(it["images"] for it in gpu["iterations"]) / cpu_rate) if cpu_rate else None
    doc = {
        "benchmark": "bench_gpu compare",
        "gpu": gpu["environment"].get("gpu"), "cpu_count": cpu["environment"].get("cpu_count"),
        "settings": {"cuda": gpu["settings"], "cpu": cpu["settings"]},
        "iteration_seconds_median": {"cuda": g.get("iteration_seconds_median"), "cpu": c.get("iteration_seconds_median")},
        "iteration_speedup": ratio(c.get("iteration_seconds_median"), g.get("iteration_seconds_median")),
        "gradient_images_per_s": {"cuda": g.get("gradient_images_per_s_after_first"), "cpu": cpu_rate},
        "gradient_speedup": ratio(g.get("gradient_images_per_s_after_first"), cpu_rate),
        "loss_only_speedup": ratio(g.get("loss_only_images_per_s"), c.get("loss_only_images_per_s")),
        "cuda_sqp_iterations": g.get("sqp_iterations"), "cpu_sqp_iterations": c.get("sqp_iterations"),
        "cuda_compress_s": (gpu.get("phases") or {}).get("compress_s"),
        "cpu_seconds_for_the_cuda_runs_sqp_oracle_images": projected,
        "finished": {"cuda": gpu.get("finished"), "cpu": cpu.get("finished")},
    }
    Path(out).write_text(json.dumps(doc, indent=2, default=str))
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", help="the JSON file to write")
    parser.add_argument("--device", default="cuda", help="--torch-device: cuda, cuda:N, cpu (default cuda)")
    parser.add_argument("--model", default="resnet18", help="a zoo model (default resnet18; fmnist_resnet with "
                        "--size 28 --channels 1 for a quick smoke test of this script)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--channels", type=int, default=3, help="image channels, the grey one repeated (default 3)")
    parser.add_argument("--sample", type=float, default=0.05, help="COBLA's fraction (or count) per gradient")
    parser.add_argument("--max-iter", type=int, default=40)
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--warm-start", default="pos-cvx",
                        help="COBLA's warm start (default pos-cvx, COBLA's; none: start the SQP from its default point)")
    parser.add_argument("--time-budget", type=float, default=None, help="COBLA's time budget (SQP + rounding), s")
    parser.add_argument("--mac-budget", default="0.5")
    parser.add_argument("--batch-size", type=int, default=256, help="oracle batch (CoblaOptions.batch_size)")
    parser.add_argument("--pool", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    parser.add_argument("--compare", nargs=2, metavar=("CUDA_JSON", "CPU_JSON"))
    args = parser.parse_args()
    if not args.out:
        parser.error("the output JSON path is required")
    if args.compare:
        print(json.dumps(compare(*args.compare, args.out), indent=2))
        return
    doc = run(args)
    print(json.dumps({"settings": doc["settings"], "summary": doc["summary"], "phases": doc.get("phases")},
                     indent=2, default=str))


if __name__ == "__main__":
    main()
