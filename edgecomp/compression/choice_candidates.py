"""COBLA over choice layers, last step: of a few knapsack allocations, keep the one with the lowest held-out loss.

The exact knapsack of edgecomp.compression.choice_scores is optimal for its objective, a second-order estimate
of the loss increase, and only as good as that estimate. Its diagonal Fisher (OBD) ignores how the errors of
different weights, and of different layers, interact, and it is measured on a small sub-sample. So, as COBLA's
randomized rounding keeps the best of several draws by the loss on held-out training data, this step scores a
few allocations that are each optimal for a different objective:

  fisher      min sum_i 1/2 sum F_i (W_i - W_hat_ic)^2               (elementwise Fisher; choice_scores)
  layer       min sum_i s_i e_ic,  s_i = 1/2 mean(F_i) ||W_i||_F^2    (one sensitivity per layer: less noisy)
  layer-sqrt  min sum_i sqrt(s_i) e_ic                                (that sensitivity shrunk toward equal)
  error       min sum_i e_ic,  e_ic = ||W_i - W_hat_ic||_F^2 / ||W_i||_F^2   (pos-cvx: no data)

each under the same exact budgets, and keeps the one whose model, with every factored layer's weight replaced
by its reconstruction W_hat (edgecomp.compression.choice_scores' reconstructions: HOSVD for Tucker-2, the
truncated SVD, the largest CP terms; the build's HOOI / CP refit is no worse in Frobenius norm), has the lowest
mean loss L(W_hat) on the held-out indices: cross-entropy with labels, the KL divergence from the original
model's predictions without them, or the user's loss_fn, as in COBLA's oracle. Identical allocations are
scored once.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from edgecomp.compression.oracle import batch_to
from edgecomp.ranks.choices import ChoiceLayer
from edgecomp.ranks.problem import RankProblem, RankSelection

# reconstruct(name, kernel, layer) -> (choice number, W_hat) for every factored choice of a choice layer
ReconstructFn = Callable[[str, np.ndarray, ChoiceLayer], Iterable[tuple[int, np.ndarray]]]


def batch_of(data, indices: np.ndarray):
    """The batch of data[indices]: the dataset's get_batch, or torch's default_collate of its items."""
    if hasattr(data, "get_batch"):
        return data.get_batch(indices)
    return default_collate([data[int(i)] for i in indices])


def _reconstruction(name: str, kernel: np.ndarray, layer, rank: int, spectrum, scheme: str,
                    reconstruct: ReconstructFn) -> np.ndarray | None:
    """W_hat of one layer at its selected choice / rank, or None when it stays dense."""
    if not layer.is_factored(int(rank)):
        return None
    if isinstance(layer, ChoiceLayer):
        for k, w_hat in reconstruct(name, kernel, layer):
            if k == int(rank):
                return np.array(w_hat)
        raise ValueError(f"layer {name}: no reconstruction for choice {rank}")
    from edgecomp.lc.choices import truncate

    return truncate(spectrum, int(rank), scheme, kernel.shape, torch.float64).numpy()


def substituted(model: nn.Module, problem: RankProblem, ranks, spectra: Mapping, schemes: Mapping[str, str],
                reconstruct: ReconstructFn) -> nn.Module:
    """A copy of `model` whose factored layers hold their reconstructions W_hat as dense weights."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for layer, rank in zip(problem.layers, ranks):
            weight = out.get_submodule(layer.name).weight
            kernel = weight.detach().to("cpu", torch.float64).numpy()
            w_hat = _reconstruction(layer.name, kernel, layer, int(rank), spectra.get(layer.name),
                                    schemes.get(layer.name, ""), reconstruct)
            if w_hat is not None:
                weight.copy_(torch.as_tensor(w_hat, dtype=weight.dtype))
    return out


@torch.no_grad()
def heldout_loss(model: nn.Module, original: nn.Module, data, indices: np.ndarray, *, loss_fn=None,
                 batch_size: int = 256) -> float:
    """Mean loss of `model` on data[indices]: loss_fn(model, batch), cross-entropy with labels, or
    KL(original || model) without them (COBLA's oracle losses)."""
    labels = bool(getattr(data, "has_labels", True))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        batch = batch_of(data, chunk)
        if loss_fn is not None:
            total += float(loss_fn(model, batch_to(batch, device))) * len(chunk)
        else:
            x, y = batch
            x = x.to(device)
            logits = model(x)
            if labels:
                total += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
            else:
                target = F.log_softmax(original(x), dim=1)
                total += float(F.kl_div(F.log_softmax(logits, dim=1), target, log_target=True, reduction="sum"))
        count += len(chunk)
    return total / max(count, 1)


def pick_by_heldout_loss(candidates: Mapping[str, RankSelection], problem: RankProblem, model: nn.Module,
                         spectra: Mapping, schemes: Mapping[str, str], reconstruct: ReconstructFn, data,
                         indices: np.ndarray, *, loss_fn=None) -> tuple[str, dict[str, float]]:
    """The label of the candidate allocation with the lowest held-out loss (module docstring), and every
    candidate's loss (candidates with the same ranks share one evaluation; ties keep the first label)."""
    losses: dict[str, float] = {}
    seen: dict[tuple, float] = {}
    for label, selection in candidates.items():
        key = tuple(int(r) for r in selection.ranks)
        if key not in seen:
            probe = substituted(model, problem, selection.ranks, spectra, schemes, reconstruct)
            seen[key] = heldout_loss(probe, model, data, indices, loss_fn=loss_fn)
        losses[label] = seen[key]
    best = min(losses, key=lambda label: (losses[label], list(candidates).index(label)))
    return best, losses
