"""Does a dataset fit a model? One check for evaluate, compress and verify, with one message each.

A dataset fits a model of input shape (N, *S) and K outputs when
  - every sample has shape S;
  - every label y (unlabelled samples carry -1) lies in [0, K): the model scores classes 0..K-1;
  - a dataset that names its classes (Fashion-MNIST, an image folder) has exactly K of them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

from edgecomp.errors import UserInputError


def check_sample_shape(sample_shape: Sequence[int], expected: Sequence[int] | None, *, data: str,
                       model: str = "the model") -> None:
    """Samples of `data` must have the model's per-sample input shape `expected` (None: unknown)."""
    if expected is None or tuple(sample_shape) == tuple(expected):
        return
    raise UserInputError(f"{data} has samples of shape {tuple(sample_shape)} but {model} takes "
                         f"{tuple(expected)}: give data of that shape (or the model it was made for)")


def check_labels(labels, num_outputs: int, *, data: str, model: str = "the model") -> None:
    """Every label (ignoring -1, unlabelled) must be a class index in [0, num_outputs)."""
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).reshape(-1)
    y = y[y != -1]
    if y.size == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_outputs:
        bad = high if high >= num_outputs else low
        raise UserInputError(f"{data} has label {bad}, but {model} has {num_outputs} outputs (classes 0 to "
                             f"{num_outputs - 1}): give data labelled for this model's classes")


def check_num_classes(classes: Sequence[str] | None, num_outputs: int, *, data: str,
                      model: str = "the model") -> None:
    """A dataset that names its classes must have as many as the model has outputs."""
    if classes is None or len(classes) == num_outputs:
        return
    raise UserInputError(f"{data} has {len(classes)} classes but {model} has {num_outputs} outputs: give a "
                         "model trained for these classes (or data with its classes)")


def known_labels(dataset):
    """The dataset's labels when reading them is cheap (array-backed data), else None."""
    from edgecomp.data.dataset import ArrayDataset, SubsetDataset

    base = dataset.base if isinstance(dataset, SubsetDataset) else dataset
    if isinstance(base, ArrayDataset) and getattr(dataset, "has_labels", False):
        return dataset.labels()
    return None


def check_dataset_fits(dataset, num_outputs: int, input_shape: Sequence[int] | None = None, *, data: str,
                       model: str = "the model") -> None:
    """Sample shape, labels and class count of an EdgeDataset against the model (see the module doc)."""
    if input_shape is not None:
        check_sample_shape(dataset.sample_shape, tuple(input_shape)[1:], data=data, model=model)
    if not getattr(dataset, "has_labels", False):
        return
    labels = known_labels(dataset)
    if labels is not None:
        check_labels(labels, num_outputs, data=data, model=model)
    elif getattr(dataset, "num_classes", None):
        check_labels(np.array([dataset.num_classes - 1]), num_outputs, data=data, model=model)
    check_num_classes(getattr(dataset, "classes", None), num_outputs, data=data, model=model)


def output_width(module, input_shape: Sequence[int]) -> int:
    """Number of outputs per sample of `module` (one forward pass of zeros, in eval mode)."""
    import torch

    from edgecomp.models.modes import eval_mode

    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = torch.zeros((1, *tuple(input_shape)[1:]), device=device)
    with torch.no_grad(), eval_mode(module), runs_on(tuple(input_shape)[1:], data="samples", model="the model"):
        out = module(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return int(out.reshape(out.shape[0], -1).shape[1])


@contextlib.contextmanager
def runs_on(sample_shape: Sequence[int], *, data: str, model: str = "the model") -> Iterator[None]:
    """Turn PyTorch's shape errors in a forward pass over user data into one clear UserInputError."""
    import torch

    try:
        yield
    except RuntimeError as exc:
        if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{model} cannot run on {data} (samples of shape {tuple(sample_shape)}): {first}; "
                             "give data of the model's input shape") from None
