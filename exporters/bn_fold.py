"""Fold eval-mode BatchNorm2d layers into the Conv2d that feeds them.

For a convolution z = W * x + b followed by batch normalisation
    y = gamma * (z - mu) / sqrt(var + eps) + beta,
let s = gamma / sqrt(var + eps) (one factor per output channel). Then
    y = (s . W) * x + (s . (b - mu) + beta),
so the pair is one convolution with W'[o] = s[o] W[o] and b' = s (b - mu) + beta. This holds for any
stride, padding, dilation and groups, because W's first axis is always the output channel.
The exported graph then has no BatchNormalization node and one less memory pass per layer.
"""

from __future__ import annotations

import torch
from torch import fx, nn


def _foldable_bn(bn: nn.Module) -> bool:
    return (
        isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
    )


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite `conv`'s weight and bias in place so that conv alone computes bn(conv(x))."""
    w = conv.weight
    var = bn.running_var.to(torch.float64)
    mean = bn.running_mean.to(torch.float64)
    gamma = bn.weight.to(torch.float64) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.to(torch.float64) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.to(torch.float64) if conv.bias is not None else torch.zeros_like(mean)
    new_w = w.to(torch.float64) * scale.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = (bias - mean) * scale + beta
    conv.weight.copy_(new_w.to(w.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_b.to(device=w.device, dtype=w.dtype), requires_grad=w.requires_grad)
    else:
        conv.bias.copy_(new_b.to(conv.bias.dtype))


def _pairs_from_fx(model: nn.Module) -> list[tuple[str, str]] | None:
    """(conv name, bn name) pairs where the BN's only input is the conv's output, from an fx trace.

    Returns None when the model cannot be traced symbolically (data-dependent control flow).
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # fx raises many types for untraceable code; the fallback handles those models
        return None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _foldable_bn(modules.get(node.target)):
            continue
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        # A conv whose output is also used elsewhere (or a module called twice) must keep its weights.
        if (
            prev.op == "call_module"
            and isinstance(modules.get(prev.target), nn.Conv2d)
            and len(prev.users) == 1
            and calls[prev.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((prev.target, node.target))
    return pairs


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """Adjacent (Conv2d, BatchNorm2d) children of containers that run their children in order."""
    pairs = []
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential) or type(container).forward is not nn.Sequential.forward:
            continue
        children = list(container.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, nn.Conv2d) and _foldable_bn(b):
                join = f"{prefix}." if prefix else ""
                pairs.append((join + name_a, join + name_b))
    return pairs


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every foldable Conv2d -> BatchNorm2d pair of `model` IN PLACE; return how many were folded.

    Callers that must not change their model pass a deep copy. The model is treated as in eval mode
    (running statistics); a BN fed by anything other than a single-use Conv2d is left in place.
    """
    pairs = _pairs_from_fx(model)
    if pairs is None:
        pairs = _pairs_from_sequentials(model)
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _replace(model, bn_name, nn.Identity())
    return len(pairs)
