"""Replace chosen layers of a model by their factored forms."""

from __future__ import annotations

import copy as _copy
from typing import Mapping

import numpy as np
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.factor.modules import make_factored
from edgecomp.factor.schemes import Spectrum, cp_factors, factor_weights, svd_factors
from edgecomp.graph.cost import auto_schemes, layer_scheme
from edgecomp.graph.trace import LayerInfo, describe_module


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

    Scheme "cp" (conv layers that are not 1x1): the kept terms of the layer's CP fit (spectra[name].cp;
    without one, a fresh ALS fit at the rank), their weights times `scales`, are refitted at that rank by
    ALS warm-started from them (edgecomp.factor.cp.refit: CP terms are not nested, so the kept terms are not
    the best fit of their rank) and built as a CPConv2d. The module records its kernel's relative error
    before the refit (`relative_error_before`) and after (`relative_error`, <= before).

    Scheme "tucker2" (conv layers that are not 1x1): ranks[name] is the pair (r1, r2); the layer is fitted
    by HOOI (started from HOSVD) at those ranks and built as a Tucker2Conv2d, which records the kernel's
    relative error ||W - W_hat||_F / ||W||_F (`relative_error`). components/scales do not apply to it.

    Scheme "auto": every layer's scheme is its own; ranks[name] is {"scheme": S, "rank": R} with S one of the
    layer's `auto_schemes` and R what S takes (an int, or [r1, r2] for tucker2); a Linear or 1x1 conv may
    also give its rank alone (its scheme is "linear"). spectra[name] is then the layer's auto Spectrum, whose
    `parts` hold the SVDs and CP fit (edgecomp.compression.problem.auto_spectrum).
    """
    out = _copy.deepcopy(model) if copy else model
    for name, rank in ranks.items():
        module = get_module(out, name)
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise UserInputError(f"layer {name!r} is a {type(module).__name__}, not a Conv2d or Linear")
        layer = describe_module(name, module)
        applied, rank = layer_entry(name, layer, scheme, rank)
        if applied == "tucker2":
            set_module(out, name, tucker2_fitted(module, *tucker2_pair(name, rank)))
            continue
        weight = module.weight
        keep = np.arange(int(rank)) if components is None or name not in components else np.asarray(components[name])
        spec = spectra.get(name) if spectra else None
        if spec is not None and spec.parts is not None:
            spec = spec.parts.get(applied)
        if spec is None:
            spec = cp_factors(weight, int(rank), name=name) if applied == "cp" else svd_factors(weight, applied)
        if len(keep) < 1 or int(np.max(keep)) >= spec.sigma.numel():
            raise UserInputError(f"layer {name!r}: rank {len(keep)} outside 1..{spec.sigma.numel()}")
        if applied == "cp":
            factored = cp_refitted(module, spec, keep, None if scales is None else scales.get(name))
            factored.train(module.training)
            set_module(out, name, factored)
            continue
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


def cp_refitted(conv: nn.Conv2d, spectrum: Spectrum, keep: np.ndarray, scales=None) -> nn.Module:
    """CPConv2d of the terms `keep` of spectrum.cp (weights times `scales`), refitted at their number by
    warm-started ALS (factorize_model); relative_error_before / relative_error say what the refit gained."""
    from edgecomp.factor.cp import CPResult, refit
    from edgecomp.factor.cp_conv import CPConv2d

    fit = spectrum.cp
    if fit is None:
        raise ValueError("a cp layer needs a Spectrum made by cp_factors / cp_spectrum")
    keep = np.asarray(keep, dtype=np.int64)
    weights = fit.weights[keep] * (1.0 if scales is None else np.asarray(scales, dtype=np.float64).reshape(-1))
    kept = CPResult(weights, [a[:, keep] for a in fit.factors], [], float("nan"), 0, 0.0, "kept", True)
    kernel = conv.weight.detach().to("cpu", torch.float64).numpy()
    result = refit(kernel, kept, len(keep))
    module = CPConv2d(conv, result.result)
    module.relative_error_before = float(result.before)
    return module


def layer_entry(name: str, layer: LayerInfo, scheme: str, entry) -> tuple[str, object]:
    """(applied scheme, rank) of a layer's rank entry under `scheme` (factorize_model): under "auto" a dict
    {"scheme": S, "rank": R} (or, for a Linear / 1x1 conv, the rank alone), else the entry itself under
    layer_scheme. UserInputError for an entry that names no scheme the layer can take."""
    if scheme != "auto":
        return layer_scheme(layer, scheme), entry
    allowed = auto_schemes(layer)
    if isinstance(entry, dict):
        applied, rank = entry.get("scheme"), entry.get("rank")
    elif allowed == ("linear",):
        applied, rank = "linear", entry
    else:
        raise UserInputError(f"layer {name!r} is factored by --scheme auto: its entry is "
                             f"{{\"scheme\": ..., \"rank\": ...}}, got {entry!r}")
    if applied not in allowed or rank is None:
        raise UserInputError(f"layer {name!r}: scheme {applied!r} with rank {rank!r} is not one it can take "
                             f"(one of {', '.join(allowed)})")
    return applied, tuple(rank) if isinstance(rank, list) else rank


def tucker2_pair(name: str, rank) -> tuple[int, int]:
    """(r1, r2) of a tucker2 layer's rank entry (a pair of positive ints)."""
    if isinstance(rank, (int, np.integer)) or len(rank) != 2:
        raise UserInputError(f"layer {name!r} is factored by Tucker-2: its ranks are a pair [r1, r2], got {rank!r}")
    return int(rank[0]), int(rank[1])


def tucker2_fitted(conv: nn.Conv2d, r1: int, r2: int) -> nn.Module:
    """Tucker2Conv2d of `conv` at (r1, r2) by HOOI; `relative_error` is its kernel's measured relative error."""
    from edgecomp.factor.tucker_conv import Tucker2Conv2d

    try:
        module = Tucker2Conv2d.from_conv(conv, r1, r2, "hooi")
    except ValueError as exc:  # ranks outside 1..c / 1..f
        raise UserInputError(f"Tucker-2 ranks ({r1}, {r2}): {exc}") from exc
    return module


def factored_skeleton(model: nn.Module, ranks: Mapping[str, int], scheme: str) -> nn.Module:
    """The factored architecture with uninitialized weights (to load a saved state dict into)."""
    out = _copy.deepcopy(model)
    for name, rank in ranks.items():
        module = get_module(out, name)
        layer = describe_module(name, module)
        applied, rank = layer_entry(name, layer, scheme, rank)
        size = tucker2_pair(name, rank) if applied == "tucker2" else int(rank)
        set_module(out, name, make_factored(layer, applied, size, dtype=module.weight.dtype))
    return out
