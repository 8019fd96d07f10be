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

from edgecomp.data import EdgeDataset, load_dataset
from edgecomp.data.dataset import UNLABELED
from edgecomp.errors import UserInputError



def _is_class_label(y: Any) -> bool:
    if isinstance(y, bool):
        return False
    if isinstance(y, int):
        return True
    return isinstance(y, torch.Tensor) and y.ndim == 0 and not y.is_floating_point() and not y.is_complex()


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
        self.has_labels = y is not None and _is_class_label(y)
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
            return x, torch.as_tensor(y, dtype=torch.int64).reshape(())
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
    """`data` as an EdgeDataset (None stays None). See the module docstring for the accepted forms."""
    if data is None or isinstance(data, EdgeDataset):
        return data
    if isinstance(data, str):
        return load_dataset(data)
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Dataset):
        return TorchDataset(data, name=f"{what}: {type(data).__name__}")
    raise UserInputError(f"{what} must be a data spec string, a torch Dataset or a DataLoader, got {type(data).__name__}")
