"""The user's own training loop, loss and metric (Python API only: callables are never read from files).

For models whose loss is not classification cross-entropy (detection, segmentation, regression), as in
the LC toolkit (the L step is the user's training code plus a penalty) and AIMET (user callbacks):

  train_fn(model, penalty_fn, steps) -> None      one signature for fine-tuning and for LC's L step
      model       the nn.Module to train in place, in train() mode on entry (BatchNorm per freeze_bn);
                  update its parameters in place (an optimizer over model.parameters()), never replace them.
      penalty_fn  penalty_fn() -> 0-dim tensor to add to the loss before backward(): in LC's L step
                  mu/2 sum_i ||w_i - Delta(Theta_i) - lambda_i/mu||^2 over the compressed weights,
                  differentiable w.r.t. them (penalty_fn.max_lr = 1/mu is the stable SGD step size on
                  it, see edgecomp.lc.schedule.clip_lr); in fine-tuning a constant 0.
      steps       how many optimizer steps the built-in loop would take here (a guide, not enforced).
  loss_fn(model, batch) -> 0-dim tensor           COBLA's loss oracle: the *mean* loss over `batch` (one
                  batch of the training data as the dataset's get_batch, or torch's default_collate,
                  returns it), computed through model(...) so that it is differentiable w.r.t. the masks.
  metric(outputs, targets) -> float               higher is better; outputs and targets of the whole
                  evaluation set, gathered over batches (tensors concatenated on dim 0, lists joined,
                  tuples and dicts entry by entry), as numpy arrays: the same types here as in the
                  harness, which gets the runtime's outputs. Default everywhere: top-1 accuracy.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.metrics import MetricFn, map_tensors, score

PenaltyFn = Callable[[], torch.Tensor]
TrainFn = Callable[[nn.Module, PenaltyFn, int], None]
LossFn = Callable[[nn.Module, Any], torch.Tensor]


class ZeroPenalty:
    """penalty_fn of plain fine-tuning: a constant 0 (0-dim tensor on the model's device)."""

    max_lr = float("inf")

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self) -> torch.Tensor:
        return torch.zeros((), device=self.device)


def check_callable(value, name: str) -> None:
    if value is not None and not callable(value):
        raise UserInputError(f"{name} must be a callable, got {type(value).__name__}")


def run_train_fn(train_fn: TrainFn, model: nn.Module, penalty_fn: PenaltyFn, steps: int, what: str) -> None:
    """Call the user's loop and check what it left: the same parameter objects, all finite."""
    before = [id(p) for p in model.parameters()]
    train_fn(model, penalty_fn, int(steps))
    if [id(p) for p in model.parameters()] != before:
        raise UserInputError(f"{what}: train_fn replaced model parameters; update them in place (an optimizer "
                             "over model.parameters())")
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
    if bad:
        raise UserInputError(f"{what}: train_fn left non-finite values in {', '.join(bad[:3])}; "
                             "lower its learning rate")


def user_metric(metric: MetricFn, outputs, targets) -> float:
    """metric(outputs, targets) on numpy arrays, as a float (edgecomp.metrics.score)."""
    return score(metric, outputs, targets)


def gather(parts: list):
    """Join per-batch values: tensors on dim 0, lists end to end, tuples and dicts entry by entry."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([p.reshape(1) if p.ndim == 0 else p for p in parts])
    if isinstance(first, list):
        return [item for p in parts for item in p]
    if isinstance(first, tuple):
        return tuple(gather([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: gather([p[k] for p in parts]) for k in first}
    return parts


def detach_cpu(value):
    """The value with every tensor detached and moved to the CPU (outputs kept for a metric)."""
    return map_tensors(lambda t: t.detach().cpu(), value)
