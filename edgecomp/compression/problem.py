"""Build the rank-selection problem (edgecomp.ranks.RankProblem) from a traced model."""

from __future__ import annotations

from torch import nn

from edgecomp.factor.schemes import Spectrum, svd_factors
from edgecomp.graph.cost import ModelCost
from edgecomp.ranks.problem import RankProblem


def compute_spectra(model: nn.Module, cost: ModelCost) -> dict[str, Spectrum]:
    """SVD (float64) of every decomposable layer's matricization, keyed by layer name."""
    modules = dict(model.named_modules())
    return {lc.name: svd_factors(modules[lc.name].weight, lc.decomposition.scheme, name=lc.name)
            for lc in cost.decomposable}


def build_problem(cost: ModelCost, spectra: dict[str, Spectrum], mac_budget: float, param_budget: float) -> RankProblem:
    """Layers in execution order; every non-decomposed layer and parameter is a fixed cost. The
    compute cost is MACs (edgecomp.ranks.latency.latency_problem turns it into a latency)."""
    layers = [lc.decomposition.spectrum(lc.name, spectra[lc.name].sigma.numpy()) for lc in cost.decomposable]
    return RankProblem(
        layers=tuple(layers),
        compute_budget=float(mac_budget),
        param_budget=float(param_budget),
        fixed_compute=float(cost.fixed_macs),
        fixed_params=float(cost.fixed_params),
        compute_unit="MACs",
    )
