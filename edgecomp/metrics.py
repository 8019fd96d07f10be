"""The user's metric(outputs, targets) -> float (higher is better), called the same way by fine-tuning,
the compression report and the harness's accuracy gate: on numpy arrays, returning a number."""

from __future__ import annotations

from typing import Any, Callable

from edgecomp.errors import UserInputError

MetricFn = Callable[[Any, Any], float]


def map_tensors(fn: Callable[[Any], Any], value: Any) -> Any:
    """`value` with fn applied to every tensor in it (nested lists, tuples, named tuples and dicts, each rebuilt
    as its own type, as a user's batch may be); anything else as is."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor, without importing torch
        return fn(value)
    if isinstance(value, (list, tuple)):
        mapped = [map_tensors(fn, v) for v in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else type(value)(mapped)
    if isinstance(value, dict):
        return type(value)((k, map_tensors(fn, v)) for k, v in value.items())
    return value


def as_numpy(value: Any) -> Any:
    """Every tensor in `value` as a numpy array."""
    return map_tensors(lambda t: t.detach().cpu().numpy(), value)


def score(metric: MetricFn, outputs: Any, targets: Any) -> float:
    """metric(outputs, targets) on numpy arrays, as a float (a 0-dim tensor or numpy scalar is accepted)."""
    value = metric(as_numpy(outputs), as_numpy(targets))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"metric must return a number, got {type(value).__name__}") from None
