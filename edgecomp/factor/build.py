"""Replace chosen layers of a model by their factored forms."""

from __future__ import annotations

import copy as _copy
from typing import Mapping

import numpy as np
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.factor.modules import make_factored
from edgecomp.factor.schemes import Spectrum, factor_weights, svd_factors
from edgecomp.graph.cost import layer_scheme
from edgecomp.graph.trace import describe_module


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise UserInputError(f"the model has no layer named {name!r}") from exc


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def factorize_model(
    model: nn.Module,
    ranks: Mapping[str, int],
    scheme: str,
    *,
    components: Mapping[str, np.ndarray] | None = None,
    scales: Mapping[str, np.ndarray] | None = None,
    spectra: Mapping[str, Spectrum] | None = None,
    copy: bool = True,
) -> nn.Module:
    """Return `model` (a deep copy unless copy=False) with each layer in `ranks` factored.

    components[name]: which singular components to keep (default: the first `rank`);
    scales[name]: per-kept-component multipliers folded into P (COBLA's m_hat scaling);
    spectra[name]: a precomputed SVD (saves recomputing it).
    """
    out = _copy.deepcopy(model) if copy else model
    for name, rank in ranks.items():
        module = get_module(out, name)
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise UserInputError(f"layer {name!r} is a {type(module).__name__}, not a Conv2d or Linear")
        layer = describe_module(name, module)
        applied = layer_scheme(layer, scheme)
        weight = module.weight
        keep = np.arange(int(rank)) if components is None or name not in components else np.asarray(components[name])
        spec = spectra.get(name) if spectra else None
        if spec is None:
            spec = svd_factors(weight, applied)
        if len(keep) < 1 or int(np.max(keep)) >= spec.sigma.numel():
            raise UserInputError(f"layer {name!r}: rank {len(keep)} outside 1..{spec.sigma.numel()}")
        first_w, second_w = factor_weights(
            weight, applied, torch.as_tensor(keep), None if scales is None else scales.get(name), spec
        )
        factored = make_factored(layer, applied, len(keep), dtype=weight.dtype).to(weight.device)
        with torch.no_grad():
            factored[0].weight.copy_(first_w.reshape(factored[0].weight.shape))
            factored[1].weight.copy_(second_w.reshape(factored[1].weight.shape))
            if module.bias is not None:
                factored[1].bias.copy_(module.bias)
        factored.train(module.training)
        set_module(out, name, factored)
    return out


def factored_skeleton(model: nn.Module, ranks: Mapping[str, int], scheme: str) -> nn.Module:
    """The factored architecture with uninitialized weights (to load a saved state dict into)."""
    out = _copy.deepcopy(model)
    for name, rank in ranks.items():
        module = get_module(out, name)
        layer = describe_module(name, module)
        set_module(out, name, make_factored(layer, layer_scheme(layer, scheme), int(rank), dtype=module.weight.dtype))
    return out
