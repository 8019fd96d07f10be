"""`module:callable` or `path/file.py:callable`: user code that returns a torch Dataset.

The callable is called with no arguments. Its items may be `x`, `(x,)` or `(x, y)` (extra tuple
entries are ignored); x is converted to a float32 tensor, y to an int64 0-d tensor. Loading runs the user's
module, which is what the user asked for by naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgecomp.data.dataset import UNLABELED, EdgeDataset
from edgecomp.errors import UserInputError
from edgecomp.imports import call_user_code, import_file, import_module, resolve_attr


def _import_target(spec: str):
    location, _, attr = spec.rpartition(":")
    if not location or not attr:
        raise UserInputError(f"dataset {spec!r}: expected module:callable or path/file.py:callable")
    try:
        module = import_file(Path(location), kind="dataset") if location.endswith(".py") else import_module(location)
        target = resolve_attr(module, attr, spec)
    except UserInputError as exc:
        raise UserInputError(f"dataset {spec!r}: {exc}") from exc
    if not callable(target):
        raise UserInputError(f"dataset {spec!r}: {attr} is not callable")
    return target


def _to_x(value, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        x = value
    elif isinstance(value, np.ndarray):
        x = torch.from_numpy(value)
    else:
        raise UserInputError(f"{where}: samples must be tensors or numpy arrays, got {type(value).__name__}")
    if not x.is_floating_point():
        raise UserInputError(f"{where}: samples must be floating point (e.g. images scaled to [0, 1]), got {x.dtype}")
    return x.to(torch.float32)


class WrappedDataset(EdgeDataset):
    """Adapts any torch Dataset to the EdgeDataset item contract."""

    def __init__(self, inner, name: str):
        if not hasattr(inner, "__len__"):
            raise UserInputError(f"{name}: the dataset must define __len__ (iterable-style datasets are not supported)")
        self.inner = inner
        self.name = name
        n = len(self)
        if n == 0:
            raise UserInputError(f"{name}: the dataset is empty")
        first = self._raw(0)
        self.has_labels = isinstance(first, (tuple, list)) and len(first) >= 2
        x0, _ = self._item(first)
        self.sample_shape = tuple(x0.shape)
        num_classes = getattr(inner, "num_classes", None)
        classes = getattr(inner, "classes", None)
        if num_classes is None and classes is not None:
            num_classes = len(classes)
        self.num_classes = int(num_classes) if (self.has_labels and num_classes is not None) else None
        self.classes = tuple(str(c) for c in classes) if (self.has_labels and classes is not None) else None

    def _item(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(item, (tuple, list)) and len(item) == 1:  # e.g. TensorDataset(x)
            item = item[0]
        if isinstance(item, (tuple, list)):
            if len(item) == 0:
                raise UserInputError(f"{self.name}: items must be x or (x, y), got an empty tuple")
            x, y = _to_x(item[0], self.name), item[1]
            try:
                y = torch.as_tensor(y).to(torch.int64).reshape(())
            except (TypeError, ValueError, RuntimeError):
                raise UserInputError(f"{self.name}: a label must be one integer, got {y!r}") from None
            return x, y
        return _to_x(item, self.name), torch.tensor(UNLABELED, dtype=torch.int64)

    def _raw(self, index: int):
        """The user dataset's item (its code runs: a sys.exit() there is an error, not an exit)."""
        return call_user_code(lambda: self.inner[index], f"{self.name}: reading sample {index}")

    def __len__(self) -> int:
        return int(call_user_code(lambda: len(self.inner), f"{self.name}: len(dataset)"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._item(self._raw(int(index)))
        if tuple(x.shape) != self.sample_shape:
            raise UserInputError(f"{self.name}: sample {index} has shape {tuple(x.shape)}, expected {self.sample_shape}")
        return x, y


def load_callable(spec: str) -> EdgeDataset:
    factory = _import_target(spec)
    dataset = call_user_code(factory, f"dataset {spec!r}: calling it",
                             exit_hint="; a dataset callable must return a torch Dataset")
    if isinstance(dataset, EdgeDataset):
        return dataset
    if not hasattr(dataset, "__getitem__"):
        raise UserInputError(f"dataset {spec!r}: returned {type(dataset).__name__}, not a torch Dataset")
    return WrappedDataset(dataset, name=spec)
