"""Factored replacements: plain Conv2d/Linear pairs (or CP's four convs), so exported graphs are ordinary
Conv/Gemm nodes."""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.graph.trace import LayerInfo


class FactoredConv2d(nn.Sequential):
    """Two convolutions replacing one: (kh x 1, 1 x kw) for spatial, (kh x kw, 1 x 1) for channel/linear."""

    def __init__(self, layer: LayerInfo, scheme: str, rank: int, dtype=torch.float32):
        c, f = layer.in_channels, layer.out_channels
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
        if scheme == "spatial":
            first = nn.Conv2d(c, rank, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), bias=False, dtype=dtype)
            second = nn.Conv2d(rank, f, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), bias=layer.bias, dtype=dtype)
        else:  # channel, or linear for 1x1 convs (then kh = kw = 1)
            first = nn.Conv2d(c, rank, (kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), bias=False, dtype=dtype)
            second = nn.Conv2d(rank, f, 1, bias=layer.bias, dtype=dtype)
        super().__init__(first, second)
        self.scheme = scheme
        self.rank = rank

    def extra_repr(self) -> str:
        return f"scheme={self.scheme}, rank={self.rank}"


class FactoredLinear(nn.Sequential):
    """Linear(in, out) -> Linear(in, r) then Linear(r, out) (bias on the second)."""

    def __init__(self, layer: LayerInfo, rank: int, dtype=torch.float32):
        super().__init__(
            nn.Linear(layer.in_channels, rank, bias=False, dtype=dtype),
            nn.Linear(rank, layer.out_channels, bias=layer.bias, dtype=dtype),
        )
        self.scheme = "linear"
        self.rank = rank

    def extra_repr(self) -> str:
        return f"scheme=linear, rank={self.rank}"


def cp_skeleton(layer: LayerInfo, rank: int, dtype=torch.float32) -> nn.Module:
    """The rank-`rank` CPConv2d (edgecomp.factor.cp_conv) of a conv layer, weights uninitialized."""
    from edgecomp.factor.cp_conv import CPConv2d

    conv = nn.utils.skip_init(
        nn.Conv2d, layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
        padding=layer.padding, dilation=layer.dilation, bias=layer.bias, padding_mode=layer.padding_mode, dtype=dtype,
    )
    return CPConv2d(conv, rank=rank)


def tucker2_skeleton(layer: LayerInfo, r1: int, r2: int, dtype=torch.float32) -> nn.Module:
    """The (r1, r2) Tucker2Conv2d (edgecomp.factor.tucker_conv) of a conv layer, weights zero."""
    import numpy as np

    from edgecomp.factor.tucker import Tucker2Result
    from edgecomp.factor.tucker_conv import Tucker2Conv2d

    c, f = layer.in_channels, layer.out_channels
    kh, kw = layer.kernel_size
    conv = nn.utils.skip_init(
        nn.Conv2d, c, f, layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
        bias=layer.bias, padding_mode=layer.padding_mode, dtype=dtype,
    )
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    zeros = Tucker2Result(np.zeros((r2, r1, kh, kw)), np.zeros((f, r2)), np.zeros((c, r1)), float("nan"), 0)
    return Tucker2Conv2d(conv, zeros)


def make_factored(layer: LayerInfo, scheme: str, rank, dtype=torch.float32) -> nn.Module:
    """The factored replacement of `layer` under its applied scheme (uninitialized weights for cp, zero for
    tucker2, whose `rank` is the pair (r1, r2))."""
    if layer.kind == "linear":
        return FactoredLinear(layer, rank, dtype)
    if scheme == "cp":
        return cp_skeleton(layer, rank, dtype)
    if scheme == "tucker2":
        return tucker2_skeleton(layer, int(rank[0]), int(rank[1]), dtype)
    return FactoredConv2d(layer, scheme, rank, dtype)
