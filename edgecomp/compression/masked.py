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

SharedWeights builds every layer's W_i(m) once for a block of forward passes (one oracle call over
many batches) instead of once per batch. Each batch's backward pass stops at W_i (a leaf) and
accumulates dE/dW_i there; `pull` then applies dE/dm = sum_i J_i^T (dE/dW_i), J_i = dW_i/dm, once.
The chain rule makes this the same gradient as backpropagating every batch through W_i(m).

fold_batchnorm folds an eval-mode BatchNorm that reads a masked layer's output into that layer:
BN(conv(x, W) + b) = conv(x, s * W) + (s * b + beta - s * mu), s = gamma / sqrt(var + eps) per output
channel, and W(m) stays linear in m, so E(m) and dE/dm are unchanged (up to float rounding) while the
BN's forward and backward passes over the activations disappear. A pair is found by forward hooks (the
BN's input is the very tensor the masked layer returned, each called once), and each fold is kept only
if the model's outputs on an example batch at two mask vectors still match the unfolded model's: a
pair whose conv output has another reader changes those outputs, and that fold is undone.

sequential_split finds the part of a model upstream of its first masked layer when that part can be
run on its own: the model is a plain nn.Sequential (nested ones are opened on the way to the first
masked layer), so model(x) == rest(prefix(x)) by nn.Sequential's contract. Other models (any custom
forward) give None: their forward may use x again after the first masked layer, or run code between
modules that a hook cannot see, so no prefix can be cut out of them safely.
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
        self.register_buffer("out_scale", None)  # a folded BatchNorm (fold_batchnorm): s per output channel
        self.register_buffer("out_bias", None)  # and the bias s * b + beta - s * mu

    def masked_weight(self) -> torch.Tensor:
        """W(m) from the current masks (plus the CP residual when every mask is 1; times a folded BN's scale)."""
        m = self.masks.value[self.start : self.stop]
        weight = unmatricize((self.P * m) @ self.V.T, self.scheme, self.weight_shape)
        if self.residual is not None and bool(torch.all(m >= 1)):
            weight = weight + self.residual
        if self.out_scale is not None:
            weight = weight * self.out_scale.reshape(-1, *([1] * (weight.dim() - 1)))
        return weight

    def forward(self, x):
        shared = self.masks.weights
        weight = shared[self.start] if shared is not None else self.masked_weight()
        mod = self.module
        bias = mod.bias if self.out_scale is None else self.out_bias
        if isinstance(mod, nn.Linear):
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, mod.stride, mod.padding, mod.dilation, mod.groups)


class MaskVector:
    """The flat mask tensor shared by all masked layers (not an nn.Module attribute: set per call)."""

    def __init__(self, n: int, dtype=torch.float32):
        self.value = torch.ones(n, dtype=dtype)
        self.weights: dict[int, torch.Tensor] | None = None  # set by SharedWeights: layer start -> W(m)


def masked_layers(model: nn.Module) -> list[MaskedLayer]:
    return [module for module in model.modules() if isinstance(module, MaskedLayer)]


class SharedWeights:
    """Context manager: every masked layer of `layers` uses W_i(m), built once on entry, for the
    forward passes inside it (module docstring). With grad, masks.value must require grad; `pull()`
    returns dE/dm of the losses backpropagated since the last pull."""

    def __init__(self, layers: list[MaskedLayer], masks: MaskVector, grad: bool):
        self.masks = masks
        self.starts = [layer.start for layer in layers]
        self.built = [layer.masked_weight() for layer in layers]
        self.used = [w.detach().requires_grad_() for w in self.built] if grad else self.built

    def __enter__(self) -> "SharedWeights":
        self.masks.weights = dict(zip(self.starts, self.used))
        return self

    def __exit__(self, *exc) -> None:
        self.masks.weights = None

    def pull(self) -> torch.Tensor:
        """dE/dm (shape of masks.value) of what was backpropagated into the shared weights since the last pull."""
        pairs = [(w, leaf.grad) for w, leaf in zip(self.built, self.used) if leaf.grad is not None]
        value = self.masks.value
        if not pairs:
            return torch.zeros_like(value)
        grads = torch.autograd.grad([w for w, _ in pairs], value, [g for _, g in pairs],
                                    retain_graph=True, allow_unused=True)[0]
        for leaf in self.used:
            leaf.grad = None
        return torch.zeros_like(value) if grads is None else grads


def fold_batchnorm(model: nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> list[str]:
    """Fold the BatchNorms that read a masked layer's output into it (module docstring); returns their names.
    `model` (a masked model in eval mode) is changed in place: each folded BN becomes nn.Identity. Each fold
    is checked on its own (the model's outputs on `example` at two mask vectors) and undone if they change."""
    candidates = _bn_after_masked(model, example)
    if not candidates:
        return []
    masks = candidates[0][0].masks
    saved = masks.value
    probes = [saved.detach(), torch.rand(saved.shape, generator=torch.Generator().manual_seed(0), dtype=saved.dtype)]
    folded = []
    try:
        with torch.no_grad():
            before = [_run(model, masks, m, example) for m in probes]
            if not all(isinstance(b, torch.Tensor) for b in before):
                return []
            for layer, name, bn in candidates:
                scale = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
                shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
                bias = layer.module.bias
                layer.out_scale = scale.detach().clone()
                layer.out_bias = (shift if bias is None else bias * scale + shift).detach().clone()
                set_module(model, name, nn.Identity())
                after = [_run(model, masks, m, example) for m in probes]
                if all(isinstance(a, torch.Tensor) and a.shape == b.shape and
                       torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))
                       for a, b in zip(after, before)):
                    folded.append(name)
                else:
                    layer.out_scale = layer.out_bias = None
                    set_module(model, name, bn)
        return folded
    finally:
        masks.value = saved


def _run(model: nn.Module, masks: "MaskVector", m: torch.Tensor, x: torch.Tensor):
    masks.value = m
    return model(x)


def _bn_after_masked(model: nn.Module, example: torch.Tensor) -> list[tuple[MaskedLayer, str, nn.Module]]:
    """(masked layer, BN name, BN) for each eval-mode BN whose only call reads the output of a masked
    conv (BatchNorm2d) or linear layer (BatchNorm1d on 2-d outputs) that was called once."""
    outputs: dict[MaskedLayer, list[torch.Tensor]] = {}
    inputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for layer in masked_layers(model):
        handles.append(layer.register_forward_hook(lambda mod, args, out: outputs.setdefault(mod, []).append(out)))
    norms = {name: mod for name, mod in model.named_modules()
             if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and not mod.training
             and mod.running_mean is not None and not (mod._forward_hooks or mod._forward_pre_hooks)}
    for name, bn in norms.items():
        handles.append(bn.register_forward_pre_hook(
            lambda mod, args, name=name: inputs.setdefault(name, []).append(args[0] if args else None)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    pairs, taken = [], set()
    for name, seen in inputs.items():
        if len(seen) != 1:
            continue
        for layer, outs in outputs.items():
            if len(outs) == 1 and outs[0] is seen[0] and layer not in taken:
                conv = isinstance(layer.module, nn.Conv2d) and isinstance(norms[name], nn.BatchNorm2d)
                linear = isinstance(layer.module, nn.Linear) and isinstance(norms[name], nn.BatchNorm1d) \
                    and outs[0].dim() == 2
                if conv or linear:
                    pairs.append((layer, name, norms[name]))
                    taken.add(layer)
    return pairs


def sequential_split(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(prefix, rest) with model(x) == rest(prefix(x)) and no masked layer in prefix, or None when the
    model is not a plain nn.Sequential or its first child already holds a masked layer (module docstring)."""
    prefix: list[nn.Module] = []
    rest: list[nn.Module] = []
    node = model
    while _plain_sequential(node):
        children = list(node)
        first = next((i for i, child in enumerate(children) if masked_layers(child)), None)
        if first is None:
            return None  # no masked layer at all: nothing for the oracle to differentiate
        prefix += children[:first]
        rest = children[first + 1 :] + rest
        node = children[first]
    if not prefix:
        return None
    return nn.Sequential(*prefix), nn.Sequential(node, *rest)


def _plain_sequential(module: nn.Module) -> bool:
    """An nn.Sequential whose forward is nn.Sequential's and on which no hook would be skipped."""
    return (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
            and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks))


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
