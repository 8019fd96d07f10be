"""Rewrite layers the TorchScript ONNX exporter cannot express into exact equivalents it can.

AdaptiveAvgPool2d whose output size does not divide its input size (e.g. 7x7 -> 4x4) has no ONNX
operator. Adaptive average pooling is linear and separable: output row i averages input rows
[floor(i H / h), ceil((i + 1) H / h)), so with the (h x H) averaging matrix A_h and the (w x W)
matrix A_w,
    Y = A_h X A_w^T     (per sample and channel),
which exports as two MatMul nodes with constant matrices and is exact up to float rounding.
The spatial input size is fixed per export (only the batch axis is dynamic), so the matrices are
constants.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def averaging_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """A (out_size x in_size) with A[i, j] = 1/len(window i) for j in PyTorch's adaptive-pool window i."""
    a = torch.zeros(out_size, in_size)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = math.ceil((i + 1) * in_size / out_size)
        a[i, start:end] = 1.0 / (end - start)
    return a


class MatmulAdaptiveAvgPool2d(nn.Module):
    """Y = A_h X A_w^T for a fixed input size (H, W)."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", averaging_matrix(in_hw[0], out_hw[0]), persistent=False)
        self.register_buffer("cols_t", averaging_matrix(in_hw[1], out_hw[1]).t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


def _pair(size, in_hw: tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return tuple(in_hw[i] if s is None else int(s) for i, s in enumerate(size))


@torch.no_grad()
def lower_adaptive_pools(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    """Replace (in place) every AdaptiveAvgPool2d with a non-dividing output size; return how many.

    `example` (a tensor, or a tuple with one tensor per input) is run through the model once to learn
    each pool's input size.
    """
    seen: dict[str, set[tuple[int, int]]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.AdaptiveAvgPool2d):

            def record(_module, inputs, _output, name=name):
                seen.setdefault(name, set()).add(tuple(int(d) for d in inputs[0].shape[-2:]))

            hooks.append(module.register_forward_hook(record))
    if not hooks:
        return 0
    try:
        model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for hook in hooks:
            hook.remove()
    lowered = 0
    for name, sizes in seen.items():
        if len(sizes) != 1:
            continue  # one module applied to several input sizes: no single pair of matrices fits
        (in_hw,) = sizes
        out_hw = _pair(model.get_submodule(name).output_size, in_hw)
        if in_hw[0] % out_hw[0] == 0 and in_hw[1] % out_hw[1] == 0:
            continue  # exports as AveragePool / GlobalAveragePool already
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MatmulAdaptiveAvgPool2d(in_hw, out_hw))
        lowered += 1
    return lowered
