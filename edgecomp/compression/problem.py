"""Build the rank-selection problem (edgecomp.ranks.RankProblem) from a traced model."""

from __future__ import annotations

from torch import nn

from edgecomp.factor.schemes import Spectrum, cp_factors, svd_factors
from edgecomp.graph.cost import ModelCost
from edgecomp.ranks.problem import RankProblem


def compute_spectra(model: nn.Module, cost: ModelCost, *, cp_solver: str = "als", seed: int = 0) -> dict[str, Spectrum]:
    """Every decomposable layer's spectrum, keyed by layer name: the SVD (float64) of its matricization, or
    for a "cp" layer a CP fit at its largest rank (Decomposition.max_rank, the break-even rank) by
    `cp_solver` ("als" or "spals", seeded by `seed`), whose term weights lambda are the sigma and whose
    fit (Spectrum.cp) the masked layers and the build reuse."""
    modules = dict(model.named_modules())
    spectra = {}
    for lc in cost.decomposable:
        weight, dec = modules[lc.name].weight, lc.decomposition
        if dec.scheme == "cp":
            spectra[lc.name] = cp_factors(weight, dec.max_rank, cp_solver, seed=seed, name=lc.name)
        else:
            spectra[lc.name] = svd_factors(weight, dec.scheme, name=lc.name)
    return spectra


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
