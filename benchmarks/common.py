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
