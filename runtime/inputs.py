"""The inputs a measurement runs on: real samples from a data spec, or seeded uniform [0, 1) noise.

The pool is sent to the target once (.npy, by hash). Latency runs cycle through it in batches;
accuracy/agreement runs every sample once. Labels stay on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecomp.errors import UserInputError
from edgecomp.runtime.artifacts import Artifact

DEFAULT_DATA_SAMPLES = 1000
DEFAULT_RANDOM_BATCHES = 16


@dataclass
class InputPool:
    x: np.ndarray | None               # (N, *sample_shape) float32; None: the agent makes random inputs
    y: np.ndarray | None               # (N,) int64 labels, -1 unlabeled; None without data
    source: str                        # "random" | "data:<spec>"
    seed: int
    count: int
    sample_shape: tuple[int, ...] | None
    num_classes: int | None = None

    @property
    def has_labels(self) -> bool:
        return self.y is not None and bool(np.all(self.y >= 0)) and self.y.size > 0

    def describe(self) -> dict:
        return {
            "source": self.source,
            "samples": self.count,
            "seed": self.seed,
            "sample_shape": None if self.sample_shape is None else list(self.sample_shape),
            "labelled": self.has_labels,
        }


def build_inputs(artifact: Artifact, data_spec: str | None, *, samples: int | None, seed: int,
                 batch_size: int) -> InputPool:
    """Real samples (data_spec) or random ones of the model's per-sample shape."""
    if samples is not None and samples < 1:
        raise UserInputError(f"samples must be >= 1, got {samples}")
    expected = artifact.sample_shape()
    if data_spec:
        from edgecomp.data import load_dataset, take_batch

        ds = load_dataset(data_spec)
        if len(ds) == 0:
            raise UserInputError(f"dataset {data_spec!r} is empty")
        x, y = take_batch(ds, samples or DEFAULT_DATA_SAMPLES, seed)
        x = x.detach().cpu().numpy().astype(np.float32, copy=False)
        y = y.detach().cpu().numpy().astype(np.int64, copy=False)
        if expected is not None and tuple(x.shape[1:]) != tuple(expected):
            raise UserInputError(
                f"dataset {data_spec!r} has samples of shape {tuple(x.shape[1:])} but {artifact.path.name} expects "
                f"{tuple(expected)}: pass --data with samples of that shape (the model's input without the batch axis)"
            )
        return InputPool(x=np.ascontiguousarray(x), y=y, source=f"data:{data_spec}", seed=seed, count=int(x.shape[0]),
                         sample_shape=tuple(x.shape[1:]), num_classes=getattr(ds, "num_classes", None))
    count = samples or DEFAULT_RANDOM_BATCHES * batch_size
    if expected is None:
        if artifact.kind == "onnx":
            raise UserInputError(
                f"{artifact.path.name} has dynamic input dimensions {artifact.input_shape} and no edgecomp.input_shape "
                "metadata: give real inputs with --data"
            )
        # engines / .ort files: the agent reads the shape from the runtime and makes the inputs itself
        return InputPool(x=None, y=None, source="random", seed=seed, count=count, sample_shape=None)
    rng = np.random.default_rng(seed)
    x = rng.random((count, *expected), dtype=np.float32)
    return InputPool(x=x, y=None, source="random", seed=seed, count=count, sample_shape=tuple(expected))


def write_pool(pool: InputPool, path: Path) -> Path | None:
    """Save the pool's x as .npy; None when the agent makes its own inputs.

    .npy rather than .npz: zip members carry a timestamp, .npy bytes depend only on the array, so the
    same pool always has the same sha256 and is not copied to the target again.
    """
    if pool.x is None:
        return None
    np.save(path, pool.x, allow_pickle=False)
    return path
