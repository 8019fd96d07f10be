"""Accuracy on the target's own outputs, and agreement with a reference model's outputs.

With labels y_i and logits z_i (N samples):
    top-k accuracy = (1/N) sum_i [y_i in the k largest entries of z_i]
    95% Wilson interval on top-1 (sampling uncertainty of N samples)
Without labels, against reference logits r_i:
    top-1 agreement = (1/N) sum_i [argmax z_i == argmax r_i]
    max / mean absolute output error = max / mean |z - r|
Since a prediction can only lose (or gain) correctness where it changes,
|accuracy(z) - accuracy(r)| <= 1 - agreement: agreement bounds the accuracy drop without labels.
A label outside [0, K) for K outputs per sample is data that does not fit the model: UserInputError
(edgecomp.data.fit), never a silent miss.
Where top-1 does not apply (regression, detection, segmentation), a user's metric(outputs, targets)
-> float (higher is better; Python API only, edgecomp.finetune.callables) scores all N outputs at once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgecomp.data.fit import check_labels
from edgecomp.errors import UserInputError
from edgecomp.metrics import score
from edgecomp.runtime.stats import wilson_interval


def _logits(outputs: np.ndarray) -> np.ndarray:
    z = np.asarray(outputs)
    if z.ndim == 1:
        z = z[:, None]
    return z.reshape(z.shape[0], -1)


def topk_correct(outputs: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many samples have their label among the k highest outputs."""
    z = _logits(outputs)
    labels = np.asarray(labels).reshape(-1)
    if z.shape[0] != labels.shape[0]:
        raise UserInputError(f"{z.shape[0]} outputs but {labels.shape[0]} labels")
    k = min(k, z.shape[1])
    top = np.argpartition(-z, kth=k - 1, axis=1)[:, :k] if k < z.shape[1] else np.broadcast_to(
        np.arange(z.shape[1]), z.shape)
    return int(np.sum(np.any(top == labels[:, None], axis=1)))


def accuracy_report(outputs: np.ndarray, labels: np.ndarray, *, data: str = "the data",
                    model: str = "the model", metric: Callable[[Any, Any], float] | None = None) -> dict[str, Any]:
    """top-1 (with its Wilson interval) and top-5 (when there are more than 5 classes); with a user
    `metric`, metric_report instead (labels are then any targets)."""
    if metric is not None:
        return metric_report(outputs, labels, metric)
    z = _logits(outputs)
    n = z.shape[0]
    if n == 0:
        raise UserInputError("no outputs to score")
    check_labels(labels, z.shape[1], data=data, model=model)
    c1 = topk_correct(z, labels, 1)
    lo, hi = wilson_interval(c1, n)
    report: dict[str, Any] = {"samples": n, "top1": c1 / n, "top1_ci95": [lo, hi], "top5": None}
    if z.shape[1] > 5:
        report["top5"] = topk_correct(z, labels, 5) / n
    return report


def metric_report(outputs: np.ndarray, targets: Any, metric: Callable[[Any, Any], float]) -> dict[str, Any]:
    """{"samples", "metric": metric(outputs, targets)} with top-1 / top-5 None (they do not apply)."""
    n = len(outputs)
    if n == 0:
        raise UserInputError("no outputs to score")
    value = score(metric, outputs, targets)
    return {"samples": n, "metric": value, "top1": None, "top1_ci95": None, "top5": None}


def agreement_report(outputs: np.ndarray, reference: np.ndarray, *, model: str = "the model",
                     reference_name: str = "the reference model") -> dict[str, Any]:
    """Top-1 agreement and absolute output error of `outputs` against `reference` (same inputs)."""
    z, r = _logits(outputs).astype(np.float64), _logits(reference).astype(np.float64)
    if z.shape != r.shape:
        raise UserInputError(f"outputs of shape {z.shape} cannot be compared with reference outputs of shape {r.shape}: "
                             f"{model} has {z.shape[1]} outputs per sample and {reference_name} {r.shape[1]}; give "
                             "the model this one was made from as --reference")
    diff = np.abs(z - r)
    same = np.argmax(z, axis=1) == np.argmax(r, axis=1)
    return {
        "samples": int(z.shape[0]),
        "top1_agreement": float(np.mean(same)),
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
    }
