"""Calibration/evaluation inputs: one array, or an iterable of batches, turned into checked float32 batches."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from edgecomp.errors import UserInputError

def _as_array(item) -> np.ndarray:
    if isinstance(item, (tuple, list)) and item and not np.isscalar(item[0]):
        item = item[0]  # (x, y) pairs from a data loader: the input is the first element
    if hasattr(item, "detach"):  # torch.Tensor without importing torch
        item = item.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(item, dtype=np.float32))


def to_batches(data, batch_size: int | None = None) -> list[np.ndarray]:
    """A list of float32 batches from an (N, ...) array (cut into `batch_size` chunks) or an iterable of batches.

    Batches from an iterable are kept as given unless `batch_size` is set, then they are re-cut so
    that every batch but the last has exactly `batch_size` samples.
    """
    if data is None:
        raise UserInputError("calibration data is required")
    if isinstance(data, np.ndarray) or hasattr(data, "detach"):
        arrays = [_as_array(data)]
    else:
        try:
            arrays = [_as_array(item) for item in data]
        except TypeError as exc:
            raise UserInputError(f"calibration data must be an array or an iterable of batches: {exc}") from exc
    arrays = [a for a in arrays if a.size]
    if not arrays:
        raise UserInputError("calibration data is empty")
    rank = arrays[0].ndim
    if any(a.ndim != rank or a.shape[1:] != arrays[0].shape[1:] for a in arrays):
        raise UserInputError(f"calibration batches differ in shape: {sorted({a.shape for a in arrays})}")
    if batch_size is None and len(arrays) > 1:
        return arrays
    full = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
    step = batch_size or len(full)
    return [full[i : i + step] for i in range(0, len(full), step)]


def check_sample_shape(batches: Sequence[np.ndarray], dims: Sequence, what: str = "the model input") -> None:
    """Raise UserInputError unless every batch is (N, *dims[1:]) where `dims` fixes them (ints)."""
    for b in batches:
        if b.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims[1:], b.shape[1:])):
            raise UserInputError(f"data of shape {b.shape} does not fit {what} {tuple(dims)}")
        if not np.isfinite(b).all():
            raise UserInputError("calibration/evaluation data contains NaN or infinite values")


def concat(batches: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(batches), axis=0)


def calibration_from_spec(spec: str, samples: int, input_shape: tuple[int, ...]):
    """(calibration x, evaluation x, evaluation labels or None): disjoint seeded samples of the data spec."""
    from edgecomp.data import load_dataset, take_batch

    if samples < 1:
        raise UserInputError(f"--calib-samples must be >= 1, got {samples}")
    data = load_dataset(spec)
    if tuple(data.sample_shape) != tuple(input_shape[1:]):
        raise UserInputError(
            f"--calib-data {spec} has samples of shape {tuple(data.sample_shape)}; "
            f"the model takes {tuple(input_shape[1:])}"
        )
    x, y = take_batch(data, 2 * samples, seed=0)
    n = samples if len(x) > samples else max(1, len(x) // 2)
    calib, evaluation = x[:n].numpy(), x[n:].numpy()
    labels = y[n:].numpy() if data.has_labels else None
    if len(evaluation) == 0:
        evaluation, labels = calib, (y[:n].numpy() if data.has_labels else None)
    return calib, evaluation, labels
