"""EdgeDataset: a torch Dataset with the metadata the pipeline needs.

Every item is `(x, y)`: x a float32 tensor of shape `sample_shape`, y an int64 0-d tensor, -1 when
the dataset has no labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from edgecomp.errors import UserInputError

UNLABELED = -1


def _as_index(indices) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        return indices.to(torch.int64).reshape(-1)
    return torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))


class EdgeDataset(Dataset):
    """Base class. Subclasses set the attributes and implement __len__ / __getitem__."""

    name: str
    has_labels: bool
    sample_shape: tuple[int, ...]
    num_classes: int | None
    classes: tuple[str, ...] | None = None
    # True when every sample is already decoded in memory: batches are one get_batch gather. False
    # (user datasets): batches go through a DataLoader with workers (edgecomp.finetune.batches).
    in_memory: bool = False

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def labels(self) -> torch.Tensor:
        """All labels as an int64 vector (-1 where unlabeled)."""
        return torch.stack([self[i][1] for i in range(len(self))]) if len(self) else torch.empty(0, dtype=torch.int64)

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (x, y) for `indices`; array-backed datasets override this with one gather."""
        items = [self[int(i)] for i in indices]
        if not items:
            return torch.empty((0, *self.sample_shape)), torch.empty((0,), dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def __repr__(self) -> str:
        labels = f"{self.num_classes} classes" if self.has_labels else "unlabeled"
        return f"<{type(self).__name__} {self.name!r}: {len(self)} x {self.sample_shape}, {labels}>"


class ArrayDataset(EdgeDataset):
    """Samples held in one array. uint8 storage is scaled to [0, 1] per item (x / 255), which keeps
    60000 Fashion-MNIST images in 47 MB instead of 188 MB of float32."""

    in_memory = True

    def __init__(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor | None,
        *,
        name: str,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
    ):
        x_t = torch.as_tensor(x)
        if x_t.ndim < 2:
            raise UserInputError(f"{name}: samples must be an array of shape (N, ...), got shape {tuple(x_t.shape)}")
        if x_t.dtype == torch.uint8:
            self._scale = 1.0 / 255.0
        elif x_t.is_floating_point():
            x_t, self._scale = x_t.to(torch.float32), None
        else:
            raise UserInputError(f"{name}: samples must be floating point or uint8, got {x_t.dtype}")
        if len(x_t) == 0:
            raise UserInputError(f"{name}: the dataset is empty")
        self._x = x_t
        if y is None:
            self._y = torch.full((len(x_t),), UNLABELED, dtype=torch.int64)
        else:
            self._y = torch.as_tensor(y).to(torch.int64)
            if self._y.shape != (len(x_t),):
                raise UserInputError(f"{name}: labels have shape {tuple(self._y.shape)}, expected ({len(x_t)},)")
        self.name = name
        self.has_labels = y is not None
        self.sample_shape = tuple(int(d) for d in x_t.shape[1:])
        self.num_classes = num_classes if y is not None else None
        self.classes = tuple(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self._x)

    def labels(self) -> torch.Tensor:
        return self._y.clone()

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) * self._scale if self._scale is not None else x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self._convert(self._x[index]), self._y[index]

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = _as_index(indices)
        return self._convert(self._x[idx]), self._y[idx]


class SubsetDataset(EdgeDataset):
    """A view of some indices of another EdgeDataset (metadata inherited)."""

    def __init__(self, base: EdgeDataset, indices: Sequence[int], name: str | None = None):
        self.base = base
        self.indices = _as_index(indices)
        self.name = name or base.name
        self.has_labels = base.has_labels
        self.sample_shape = base.sample_shape
        self.num_classes = base.num_classes
        self.classes = base.classes
        self.in_memory = base.in_memory

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base[int(self.indices[int(index)])]

    def labels(self) -> torch.Tensor:
        return self.base.labels()[self.indices]

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = _as_index(indices)
        return self.base.get_batch(self.indices[idx])
