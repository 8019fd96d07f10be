"""Build the rank-selection problem (edgecomp.ranks.RankProblem) from a traced model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecomp.factor.schemes import Spectrum, check_finite, cp_factors, svd_factors
from edgecomp.graph.cost import LayerCost, ModelCost, tucker2_layer_costs
from edgecomp.ranks.knapsack import ChoiceLayer
from edgecomp.ranks.problem import RankProblem


def compute_spectra(model: nn.Module, cost: ModelCost, *, cp_solver: str = "als", seed: int = 0) -> dict[str, Spectrum]:
    """Every decomposable layer's spectrum, keyed by layer name: the SVD (float64) of its matricization, or
    for a "cp" layer a CP fit at its largest rank (Decomposition.max_rank, the break-even rank) by
    `cp_solver` ("als" or "spals", seeded by `seed`), whose term weights lambda are the sigma and whose
    fit (Spectrum.cp) the masked layers and the build reuse; for a "tucker2" layer its choices
    (Spectrum.tucker2, `tucker2_choices`)."""
    modules = dict(model.named_modules())
    spectra = {}
    for lc in cost.decomposable:
        weight, dec = modules[lc.name].weight, lc.decomposition
        if dec.scheme == "cp":
            spectra[lc.name] = cp_factors(weight, dec.max_rank, cp_solver, seed=seed, name=lc.name)
        elif dec.scheme == "tucker2":
            empty = torch.zeros(0, dtype=torch.float64)
            spectra[lc.name] = Spectrum(empty, empty, empty, tucker2=tucker2_choices(lc, weight))
        else:
            spectra[lc.name] = svd_factors(weight, dec.scheme, name=lc.name)
    return spectra


def build_problem(cost: ModelCost, spectra: dict[str, Spectrum], mac_budget: float, param_budget: float) -> RankProblem:
    """Layers in execution order; every non-decomposed layer and parameter is a fixed cost. The
    compute cost is MACs (edgecomp.ranks.latency.latency_problem turns it into a latency)."""
    layers = [spectra[lc.name].tucker2 if lc.decomposition.scheme == "tucker2"
              else lc.decomposition.spectrum(lc.name, spectra[lc.name].sigma.numpy()) for lc in cost.decomposable]
    return RankProblem(
        layers=tuple(layers),
        compute_budget=float(mac_budget),
        param_budget=float(param_budget),
        fixed_compute=float(cost.fixed_macs),
        fixed_params=float(cost.fixed_params),
        compute_unit="MACs",
    )


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
