"""Run an ONNX/ORT model in onnxruntime (CPU) and compare its outputs with a reference.

Error measures over all outputs, with reference r and candidate c:
    max_abs_error  = max |c - r|
    mean_abs_error = mean |c - r|
    relative_error = max |c - r| / max |r|   (scale-free; a model whose outputs are all zero uses 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecomp.errors import UserInputError


@dataclass(frozen=True)
class OutputErrors:
    max_abs_error: float
    mean_abs_error: float
    relative_error: float


def cpu_session(model: str | Path | bytes, config: dict[str, str] | None = None):
    """An onnxruntime InferenceSession on the CPU execution provider (warnings silenced), with extra
    session config entries `config`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # No busy-waiting between ops: verification runs are short and hosts (CI) are often oversubscribed.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        name = "the model" if isinstance(model, bytes) else str(model)
        raise UserInputError(f"onnxruntime cannot load {name}: {exc}") from exc


def single_input(session) -> tuple[str, list]:
    """Name and shape (ints, or strings/None for dynamic dims) of a session's only input."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise UserInputError(f"expected a model with one input, it has {len(inputs)}: {[i.name for i in inputs]}")
    return inputs[0].name, list(inputs[0].shape)


def run_batched(session, x: np.ndarray, batch_size: int | None = None) -> list[np.ndarray]:
    """Run a single-input session on `x`, in chunks of `batch_size` along axis 0 (all at once if None)."""
    name, shape = single_input(session)
    x = np.ascontiguousarray(x, dtype=np.float32)
    fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None
    step = fixed_batch or batch_size or len(x)
    if fixed_batch and len(x) % fixed_batch:
        raise UserInputError(
            f"the model's batch size is fixed at {fixed_batch}; {len(x)} samples do not divide into it"
        )
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x), step):
        chunks.append(session.run(None, {name: x[start : start + step]}))
    return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]


def run_inputs(session, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run a session once on one array per graph input (in the graph's input order)."""
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise UserInputError(f"the model has {len(names)} inputs {names}; {len(inputs)} arrays were given")
    return session.run(None, {n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(names, inputs)})


def compare_outputs(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> OutputErrors:
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs but {len(candidate)} candidate outputs")
    max_abs = 0.0
    abs_sum = 0.0
    count = 0
    ref_max = 0.0
    for r, c in zip(reference, candidate):
        r = np.asarray(r, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if r.shape != c.shape:
            raise ValueError(f"output shapes differ: reference {r.shape}, candidate {c.shape}")
        diff = np.abs(c - r)
        if diff.size:
            worst = float(diff.max())
            max_abs = max(max_abs, float("inf") if np.isnan(worst) else worst)
            ref_max = max(ref_max, float(np.abs(r).max()))
        abs_sum += float(diff.sum())
        count += diff.size
    return OutputErrors(
        max_abs_error=max_abs,
        mean_abs_error=abs_sum / max(count, 1),
        relative_error=max_abs / (ref_max if ref_max > 0 else 1.0),
    )
