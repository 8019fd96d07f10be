"""Shared helpers for the benchmark scripts (results go to benchmarks/results/*.json)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def write_results(name: str, payload: dict) -> Path:
    from edgecomp.io import write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json(path, {"environment": environment(), **payload})
    print(f"wrote {path}", file=sys.stderr)
    return path


def reference_model():
    """The shipped Fashion-MNIST reference CNN (edgecomp/weights/fmnist_cnn.safetensors)."""
    from edgecomp.models import load_model

    weights = Path(__file__).resolve().parents[1] / "edgecomp" / "weights" / "fmnist_cnn.safetensors"
    if not weights.exists():
        sys.exit(f"{weights} is missing: run `python benchmarks/train_reference.py` first")
    return load_model("zoo:fmnist_cnn", str(weights))


def dumps(obj) -> str:
    from edgecomp.io import to_jsonable

    return json.dumps(to_jsonable(obj), indent=2)


def interleaved_latency(onnx_paths: dict, input_shape, *, threads: int = 1, rounds: int = 7, iterations: int = 300,
                        warmup: int = 30) -> dict[str, dict]:
    """ONNX Runtime CPU latency of several models timed in one process: `threads` intra-op threads, spinning off
    (so sessions do not steal each other's cores), batch of `input_shape`, `rounds` rounds that alternate the
    sessions (order rotated each round). Per model: the median over rounds of the per-round median seconds per
    call, and each round's ratio to the model named "original" timed in the same round."""
    import statistics

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in onnx_paths.items()}
    x = np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    names = list(sessions)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            session, feed = sessions[name], feeds[name]
            for _ in range(warmup):
                session.run(None, feed)
            times = []
            for _ in range(iterations):
                t = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - t)
            per_round[name].append(statistics.median(times))
    base = per_round["original"]
    return {name: {"median_s": statistics.median(values), "round_medians_s": values,
                   "ratio": statistics.median(values) / statistics.median(base),
                   "round_ratios": [v / b for v, b in zip(values, base)]}
            for name, values in per_round.items()}
