"""The loss/gradient oracle COBLA's solver calls: E(m) and dE/dm on a random sub-sample of the data.

Each SQP iteration k draws a fresh, seeded sub-sample (default 5% of the training data, as in
COBLA's sub-sampled gradients); the line search of that iteration reuses the same sub-sample so its
loss values are comparable. With labels the loss is cross-entropy; without labels it is the KL
divergence from the original model's predictions (self-distillation), so no labels are needed.
A user's `loss_fn(model, batch)` (the mean loss of one batch; edgecomp.finetune.callables) replaces
both: E(m) = sum over batches B of loss_fn(masked model, B) * |B| / n, for any data whose batches
the dataset's get_batch (or torch's default_collate of its items) makes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from edgecomp.compression.masked import MaskVector
from edgecomp.errors import UserInputError
from edgecomp.finetune.callables import LossFn, check_callable


class MaskLossOracle:
    def __init__(
        self,
        masked: nn.Module,
        masks: MaskVector,
        data,
        *,
        sample: float | int = 0.05,
        batch_size: int = 256,
        seed: int = 0,
        teacher: nn.Module | None = None,
        indices: np.ndarray | None = None,
        loss_fn: LossFn | None = None,
    ):
        """sample: a fraction (0, 1] of the data or a number of samples; 1.0 = full batch."""
        check_callable(loss_fn, "loss_fn")
        self.loss_fn = loss_fn
        self.model = masked
        self.masks = masks
        self.data = data
        self.pool = np.arange(len(data)) if indices is None else np.asarray(indices)
        n = len(self.pool)
        self.n_sample = n if sample == 1.0 else int(min(n, max(1, round(sample * n) if sample < 1 else sample)))
        self.batch_size = batch_size
        self.seed = seed
        self.teacher = None if (loss_fn is not None or data.has_labels) else teacher
        if loss_fn is None and not data.has_labels and teacher is None:
            raise ValueError("unlabeled data needs a teacher model for the distillation loss")
        self._cache: tuple[int, np.ndarray] | None = None
        self.seconds = 0.0
        self.calls = 0

    def indices(self, iteration: int) -> np.ndarray:
        if self.n_sample == len(self.pool):
            return self.pool
        if self._cache is None or self._cache[0] != iteration:
            rng = np.random.default_rng([self.seed, iteration])
            self._cache = (iteration, np.sort(rng.choice(self.pool, self.n_sample, replace=False)))
        return self._cache[1]

    def _loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, y, reduction="sum")
        with torch.no_grad():
            target = F.log_softmax(self.teacher(x), dim=1)
        return F.kl_div(F.log_softmax(logits, dim=1), target, log_target=True, reduction="sum")

    def _user_loss(self, chunk: np.ndarray, grad: bool) -> torch.Tensor:
        if hasattr(self.data, "get_batch"):
            batch = self.data.get_batch(chunk)
        else:
            batch = default_collate([self.data[int(i)] for i in chunk])
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise UserInputError(f"loss_fn must return a scalar tensor (the batch's mean loss), got "
                                 f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
        if grad and not loss.requires_grad:
            raise UserInputError("loss_fn's loss does not depend on the model's outputs (no gradient): compute it "
                                 "from model(...) on the batch, without torch.no_grad() or .detach()")
        return loss.reshape(())

    def evaluate(self, m: np.ndarray, indices: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        """Mean loss over `indices` (and its gradient with respect to the flat masks)."""
        start = time.perf_counter()
        value = torch.as_tensor(np.asarray(m), dtype=self.masks.value.dtype).clone().requires_grad_(grad)
        self.masks.value = value
        total = 0.0
        with torch.set_grad_enabled(grad):
            for i in range(0, len(indices), self.batch_size):
                chunk = indices[i : i + self.batch_size]
                if self.loss_fn is None:
                    x, y = self.data.get_batch(chunk)
                    loss = self._loss(self.model(x), x, y) / len(indices)
                else:
                    loss = self._user_loss(chunk, grad) * (len(chunk) / len(indices))
                if grad:
                    loss.backward()
                total += float(loss.detach())
        self.seconds += time.perf_counter() - start
        self.calls += 1
        g = value.grad.detach().double().numpy().copy() if grad else None
        self.masks.value = value.detach()
        return total, g

    def __call__(self, m: np.ndarray, iteration: int) -> tuple[float, np.ndarray]:
        return self.evaluate(m, self.indices(iteration), grad=True)

    def loss(self, m: np.ndarray, iteration: int) -> float:
        return self.evaluate(m, self.indices(iteration), grad=False)[0]
