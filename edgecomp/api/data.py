"""The user's data as the EdgeDataset the compression flow reads: a spec string, an EdgeDataset, a
torch Dataset, or a DataLoader (its dataset is used; the flow draws its own batches).

A torch Dataset's items are `(x, y)` or `x`. Integer class labels make it a labelled classification
dataset (top-1, fine-tuning with cross-entropy, label checks); any other target (a float tensor, a
box list) is passed through unchanged to the user's own loss_fn / train_fn / metric, and the built-in
label-based steps treat the dataset as unlabelled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from edgecomp.data import EdgeDataset, SubsetDataset, load_dataset
from edgecomp.data.dataset import UNLABELED
from edgecomp.errors import UserInputError



def _class_label(y: Any) -> int | None:
    """y as a class index if it is one (a Python or numpy integer, or an integer tensor/array with
    one element), else None. Negative labels mean "unlabelled" (edgecomp's -1)."""
    import numbers

    import numpy as np

    if isinstance(y, bool):
        return None
    if isinstance(y, (numbers.Integral, np.integer)):
        return int(y)
    if isinstance(y, torch.Tensor) and y.numel() == 1:
        integral = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
        return int(y.reshape(-1)[0]) if integral else None
    if isinstance(y, np.ndarray) and y.size == 1:
        return int(y.reshape(-1)[0]) if np.issubdtype(y.dtype, np.integer) else None
    return None


class TorchDataset(EdgeDataset):
    """A user's torch Dataset seen as an EdgeDataset (items converted on access, nothing copied)."""

    def __init__(self, dataset: Dataset, name: str):
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise UserInputError(f"{name}: the dataset has no len(); pass a map-style Dataset or a DataLoader over one") from exc
        if n == 0:
            raise UserInputError(f"{name}: the dataset is empty")
        self.dataset = dataset
        self.name = name
        x, y = self._split(dataset[0])
        self.sample_shape = tuple(int(d) for d in x.shape)
        label = _class_label(y) if y is not None else None
        self.has_labels = label is not None and label >= 0
        # Targets that are not class labels (regression values, boxes): only the user's own loss_fn,
        # train_fn and metric know what to do with them.
        self.has_targets = y is not None and label is None
        self.num_classes = None
        self._n = n

    @staticmethod
    def _split(item) -> tuple[torch.Tensor, Any]:
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise UserInputError(f"dataset items must be x or (x, target), got a {type(item).__name__} of {len(item)}")
            x, y = item
        else:
            x, y = item, None
        x = torch.as_tensor(x)
        if not (x.is_floating_point() or x.dtype == torch.uint8):
            raise UserInputError(f"dataset samples must be floating point (or uint8 images), got {x.dtype}")
        return x, y

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int):
        x, y = self._split(self.dataset[int(index)])
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        if y is None:
            return x, torch.tensor(UNLABELED, dtype=torch.int64)
        if self.has_labels:
            label = _class_label(y)
            return x, torch.tensor(UNLABELED if label is None else label, dtype=torch.int64)
        return x, torch.as_tensor(y) if not isinstance(y, torch.Tensor) else y

    def get_batch(self, indices):
        items = [self[int(i)] for i in indices]
        if not items:
            return torch.empty((0, *self.sample_shape)), torch.empty((0,), dtype=torch.int64)
        ys = [y for _, y in items]
        try:
            y = torch.stack(ys)
        except (RuntimeError, TypeError):
            y = ys  # ragged targets (detection boxes): the user's loss gets the list
        return torch.stack([x for x, _ in items]), y


def as_dataset(data, what: str = "data") -> EdgeDataset | None:
    """`data` as an EdgeDataset (None stays None). See the module docstring for the accepted forms.
    A DataLoader or Subset over an EdgeDataset keeps that dataset's metadata (labels, classes)."""
    from torch.utils.data import Subset

    if data is None or isinstance(data, EdgeDataset):
        return data
    if isinstance(data, str):
        return load_dataset(data)
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Subset):
        base = as_dataset(data.dataset, what)
        if isinstance(base, EdgeDataset) and not isinstance(base, TorchDataset):
            return SubsetDataset(base, list(data.indices))
    if isinstance(data, EdgeDataset):
        return data
    if isinstance(data, Dataset):
        return TorchDataset(data, name=f"{what}: {type(data).__name__}")
    raise UserInputError(f"{what} must be a data spec string, a torch Dataset or a DataLoader, got {type(data).__name__}")
