"""Build the rank-selection problem (edgecomp.ranks.RankProblem) from a traced model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecomp.factor.schemes import Spectrum, check_finite, cp_factors, cp_truncation_errors, svd_factors
from edgecomp.graph.cost import CHOICE_SCHEMES, LayerCost, ModelCost, tucker2_layer_costs
from edgecomp.ranks.choices import ChoiceLayer, pareto_front
from edgecomp.ranks.knapsack import truncation_errors
from edgecomp.ranks.problem import RankProblem

_EMPTY = torch.zeros(0, dtype=torch.float64)


def compute_spectra(model: nn.Module, cost: ModelCost, *, cp_solver: str = "als", seed: int = 0) -> dict[str, Spectrum]:
    """Every decomposable layer's spectrum, keyed by layer name: the SVD (float64) of its matricization, or
    for a "cp" layer a CP fit at its largest rank (Decomposition.max_rank, the break-even rank) by
    `cp_solver` ("als" or "spals", seeded by `seed`), whose term weights lambda are the sigma and whose
    fit (Spectrum.cp) the masked layers and the build reuse; for a "tucker2" layer its choices
    (Spectrum.tucker2 and .choices, `tucker2_choices`); for an "auto" layer its choices (Spectrum.choices,
    `auto_choices`) and the SVDs and CP fit they come from (Spectrum.parts)."""
    modules = dict(model.named_modules())
    spectra = {}
    for lc in cost.decomposable:
        weight, dec = modules[lc.name].weight, lc.decomposition
        if dec.scheme == "cp":
            spectra[lc.name] = cp_factors(weight, dec.max_rank, cp_solver, seed=seed, name=lc.name)
        elif dec.scheme == "tucker2":
            layer = tucker2_choices(lc, weight)
            spectra[lc.name] = Spectrum(_EMPTY, _EMPTY, _EMPTY, tucker2=layer, choices=layer)
        elif dec.scheme == "auto":
            spectra[lc.name] = auto_spectrum(lc, weight, cp_solver=cp_solver, seed=seed)
        else:
            spectra[lc.name] = svd_factors(weight, dec.scheme, name=lc.name)
    return spectra


def build_problem(cost: ModelCost, spectra: dict[str, Spectrum], mac_budget: float, param_budget: float) -> RankProblem:
    """Layers in execution order; every non-decomposed layer and parameter is a fixed cost. The
    compute cost is MACs (edgecomp.ranks.latency.latency_problem turns it into a latency)."""
    layers = [_choices(spectra[lc.name]) if lc.decomposition.scheme in CHOICE_SCHEMES
              else lc.decomposition.spectrum(lc.name, spectra[lc.name].sigma.numpy()) for lc in cost.decomposable]
    return RankProblem(
        layers=tuple(layers),
        compute_budget=float(mac_budget),
        param_budget=float(param_budget),
        fixed_compute=float(cost.fixed_macs),
        fixed_params=float(cost.fixed_params),
        compute_unit="MACs",
    )


def _choices(spectrum: Spectrum) -> ChoiceLayer:
    return spectrum.choices if spectrum.choices is not None else spectrum.tucker2


def tucker2_choices(lc: LayerCost, weight: torch.Tensor) -> ChoiceLayer:
    """A Tucker-2 conv layer's knapsack choices, with exact costs (summed over the layer's calls):

    - the Pareto-undominated (r1, r2) pairs of edgecomp.factor.tucker.pareto_choices (pruned on the first
      call's costs; for a layer called at several resolutions the sums are still exact, the pruning then
      approximate), and
    - the "uniform" pairs (floor(t c), floor(t f)) at every breakpoint t in {r / c} U {r / f} (so the
      uniform method finds its pairs among the choices; the knapsack ignores them when dominated),
    each with its exact squared HOSVD truncation error (pair_errors), the pairs no cheaper than the dense
    layer in both costs dropped; then the dense layer (error 0, the original costs) last."""
    from edgecomp.factor.tucker import pair_errors, pareto_choices

    layer = lc.layer
    check_finite(weight.detach(), f"layer {lc.name!r} weight")
    kernel = weight.detach().to("cpu", torch.float64).numpy()
    f, c = kernel.shape[:2]
    call = layer.calls[0]
    pareto = pareto_choices(kernel, call.in_shape[1], call.in_shape[2], layer.stride, layer.padding, layer.dilation,
                            bias=layer.bias)
    pairs = {(ch.r1, ch.r2) for ch in pareto if not ch.dense}
    for t in np.unique(np.concatenate([np.arange(1, c + 1) / c, np.arange(1, f + 1) / f])):
        pairs.add((int(np.clip(np.floor(t * c + 1e-9), 1, c)), int(np.clip(np.floor(t * f + 1e-9), 1, f))))
    r1s, r2s = (np.array(v, dtype=np.int64) for v in zip(*sorted(pairs)))
    macs, params = tucker2_layer_costs(layer, r1s, r2s)
    macs, params = np.asarray(macs, dtype=np.int64), np.asarray(params, dtype=np.int64)
    grid = pair_errors(kernel, np.arange(1, c + 1), np.arange(1, f + 1))
    errors = grid[r1s - 1, r2s - 1]
    alive = (macs < layer.macs) | (params < layer.params)
    order = np.lexsort((params, macs))
    order = order[alive[order]]
    n = order.size
    return ChoiceLayer(
        name=lc.name, sigma=np.ones(n + 1), compute_per_rank=float(lc.decomposition.macs_per_rank),
        params_per_rank=float(lc.decomposition.params_per_rank), original_compute=float(layer.macs),
        original_params=float(layer.params), bias_params=float(lc.decomposition.bias_params), shape=(f, c),
        r1s=np.append(r1s[order], c), r2s=np.append(r2s[order], f),
        choice_compute=np.append(macs[order], layer.macs).astype(np.float64),
        choice_params=np.append(params[order], layer.params).astype(np.float64),
        errors=np.append(errors[order], 0.0), weight_energy=float(np.sum(kernel ** 2)),
    )


def auto_spectrum(lc: LayerCost, weight: torch.Tensor, *, cp_solver: str = "als", seed: int = 0) -> Spectrum:
    """Scheme auto: the SVDs (spatial, channel) and CP fit (at its largest rank, by `cp_solver`) of a conv layer,
    as Spectrum.parts, and its choices (`auto_choices`) as Spectrum.choices."""
    check_finite(weight.detach(), f"layer {lc.name!r} weight")
    parts = {}
    for option in lc.decomposition.options:
        if option.scheme == "cp":
            parts["cp"] = cp_factors(weight, option.max_rank, cp_solver, seed=seed, name=lc.name)
        elif option.scheme in ("spatial", "channel"):
            parts[option.scheme] = svd_factors(weight, option.scheme, name=lc.name)
    return Spectrum(_EMPTY, _EMPTY, _EMPTY, cp=parts["cp"].cp if "cp" in parts else None,
                    choices=auto_choices(lc, weight, parts), parts=parts)


def auto_choices(lc: LayerCost, weight: torch.Tensor, parts: dict[str, Spectrum]) -> ChoiceLayer:
    """A conv layer's choices under scheme auto: the union over its schemes (lc.decomposition.options) of

    - spatial / channel: ranks 1 .. b-1 of the SVD (b the scheme's break-even rank), error the squared tail
      sum_{j>r} sigma_j^2 of the matricization (a rearrangement of W, so the kernel's error);
    - cp: ranks 1 .. b-1 of the CP fit (parts["cp"]), error ||W - X_r||^2 of the reconstruction from the r
      largest-weight terms (`cp_truncation_errors`; the build refits them at rank r, which is no worse);
    - tucker2: the pairs of `tucker2_choices`, error the HOSVD truncation's (the build's HOOI is no worse),

    every one with its exact (MACs, params), pruned to the Pareto frontier of (MACs, params, error) with the
    dense layer (`pareto_front`), then the dense layer (error 0, the original costs) last. Choice 1 must be the
    cheapest in both costs (edgecomp.ranks.choices.ChoiceLayer): the frontier's cheapest in MACs (ties: params)
    is, unless a choice has fewer params; such choices (none when some scheme's smallest form is the cheapest
    in both, as CP's rank 1 is for kernels of 2x2 and up) are dropped, so the knapsack may miss them."""
    layer = lc.layer
    kernel = weight.detach().to("cpu", torch.float64).numpy()
    f, c = kernel.shape[:2]
    groups = []  # one (schemes, ranks, r1s, r2s, macs, params, errors) of equal-length arrays per scheme
    for option in lc.decomposition.options:
        if option.scheme == "tucker2":
            t2 = tucker2_choices(LayerCost(layer, option), weight)
            n = t2.max_rank - 1
            groups.append((np.full(n, "tucker2"), np.zeros(n, np.int64), t2.r1s[:n], t2.r2s[:n],
                           t2.choice_compute[:n], t2.choice_params[:n], t2.errors[:n]))
            continue
        spectrum = parts[option.scheme]
        top = min(option.break_even_rank - 1, option.max_rank, spectrum.sigma.numel())
        rank = np.arange(1, top + 1, dtype=np.int64)
        if option.scheme == "cp":
            err = cp_truncation_errors(kernel, spectrum.cp)[rank - 1]
        else:
            err = truncation_errors(spectrum.sigma.numpy(), rank, option.max_rank)
        zeros = np.zeros(top, np.int64)
        groups.append((np.full(top, option.scheme), rank, zeros, zeros, (rank * option.macs_per_rank).astype(float),
                       (rank * option.params_per_rank + option.bias_params).astype(float), err))
    schemes, ranks, r1s, r2s, macs, params, errors = (np.concatenate(column) for column in zip(*groups))
    front = pareto_front(np.append(macs, layer.macs), np.append(params, layer.params), np.append(errors, 0.0))
    front = front[front < macs.size]  # the dense layer goes last in any case
    if front.size:
        front = front[params[front] >= params[front[0]]]
    return ChoiceLayer(
        name=lc.name, sigma=np.ones(front.size + 1), compute_per_rank=float(lc.decomposition.macs_per_rank),
        params_per_rank=float(lc.decomposition.params_per_rank), original_compute=float(layer.macs),
        original_params=float(layer.params), bias_params=float(lc.decomposition.bias_params), shape=(f, c),
        r1s=np.append(r1s[front], c), r2s=np.append(r2s[front], f),
        choice_compute=np.append(macs[front], layer.macs), choice_params=np.append(params[front], layer.params),
        errors=np.append(errors[front], 0.0), weight_energy=float(np.sum(kernel ** 2)),
        choice_schemes=np.append(schemes[front], "dense"), choice_ranks=np.append(ranks[front], 0),
    )
