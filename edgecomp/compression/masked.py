"""Masked layers for COBLA: W(m) = sum_j m_j P_j V_j^T, so autograd gives dE/dm in one backward pass.

For the layer's matricization M = sum_j P_j V_j^T (P = U diag(sigma)), the gradient of the loss with
respect to mask j is dE/dm_j = P_j^T (dE/dM) V_j (COBLA, Li & Shi, section 3): autograd computes it
through W = unmatricize((P * m) V^T). All layers read slices of one flat mask vector, so a single
backward pass fills the whole gradient in the problem's variable order.

Scheme "cp": P_j V_j^T is the j-th CP term lambda_j a_j o b_j o c_j o d_j in the channel matricization
(edgecomp.factor.schemes.cp_spectrum), so the layer runs one conv with the kernel sum_j m_j (term j),
exact and differentiable in the masks. CP at the largest rank does not reproduce W, and all masks at 1
means "left unfactored" (the original weights): then the constant residual W - sum_j (term j) is added,
so the masked model computes the model that will be built (the gradient is unchanged by a constant).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgecomp.factor.build import get_module, set_module
from edgecomp.factor.schemes import Spectrum, unmatricize
from edgecomp.graph.cost import ModelCost


class MaskedLayer(nn.Module):
    def __init__(self, module: nn.Module, spectrum: Spectrum, scheme: str, masks: "MaskVector", start: int, stop: int):
        super().__init__()
        self.module = module
        self.scheme = scheme
        self.weight_shape = tuple(module.weight.shape)
        dtype = module.weight.dtype
        self.register_buffer("P", spectrum.P.to(dtype))
        self.register_buffer("V", spectrum.V.to(dtype))
        self.masks = masks
        self.start, self.stop = start, stop
        residual = None
        if scheme == "cp":
            full = unmatricize(spectrum.P @ spectrum.V.T, scheme, self.weight_shape)
            residual = (module.weight.detach().to(full.dtype) - full).to(dtype)
        self.register_buffer("residual", residual)

    def forward(self, x):
        m = self.masks.value[self.start : self.stop]
        weight = unmatricize((self.P * m) @ self.V.T, self.scheme, self.weight_shape)
        if self.residual is not None and bool(torch.all(m >= 1)):
            weight = weight + self.residual
        mod = self.module
        if isinstance(mod, nn.Linear):
            return F.linear(x, weight, mod.bias)
        return F.conv2d(x, weight, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups)


class MaskVector:
    """The flat mask tensor shared by all masked layers (not an nn.Module attribute: set per call)."""

    def __init__(self, n: int, dtype=torch.float32):
        self.value = torch.ones(n, dtype=dtype)


def masked_model(model: nn.Module, cost: ModelCost, spectra: dict[str, Spectrum], order: list[str]) -> tuple[nn.Module, MaskVector]:
    """A deep copy of `model` (eval mode) whose layers in `order` read masks from one flat vector."""
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    dtype = next(out.parameters()).dtype
    schemes = {lc.name: lc.decomposition.scheme for lc in cost.decomposable}
    total = sum(spectra[name].sigma.numel() for name in order)
    masks = MaskVector(total, dtype)
    offset = 0
    for name in order:
        k = spectra[name].sigma.numel()
        set_module(out, name, MaskedLayer(get_module(out, name), spectra[name], schemes[name], masks, offset, offset + k))
        offset += k
    return out, masks
