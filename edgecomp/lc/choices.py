"""The LC C step over "choice layers" (edgecomp.ranks.choices.ChoiceLayer: explicit options with exact
costs, dense last), e.g. Tucker-2 convs whose (r1, r2) pairs have bilinear costs.

Each C step, for X_i = w_i - lambda_i / mu:

 1. every choice layer's options are recomputed from X_i: `choices_fn(name, X_i)` (default: the Tucker-2
    choices of edgecomp.compression.problem.tucker2_choices, i.e. the Pareto (r1, r2) pairs with their
    exact costs and squared HOSVD errors of X_i, then the dense layer); layers for which it returns None
    stay SVD layers (their spectrum is the SVD of X_i's matricization);
 2. one option per layer is chosen by the exact multiple-choice knapsack under both budgets,
    edgecomp.ranks.choices.select_choices_min_error, which minimizes sum_i E_i(c_i) / ||X_i||^2;
 3. Delta_i = `project_fn(name, X_i, layer, choice)`: default the HOOI fit of X_i at the chosen (r1, r2)
    (edgecomp.factor.tucker.tucker2_hooi, started from HOSVD, no worse than the HOSVD error the knapsack
    saw), or X_i itself for the dense choice; SVD layers take their truncated SVD.

The knapsack's objective weighs each layer by 1 / ||X_i||^2, so across layers this is a weighted
projection rather than the plain Euclidean one of the SVD C step (edgecomp.lc.cstep, raw squared errors);
within a layer it is the Frobenius projection. The weighting keeps layers of arbitrary scale (a conv
before BatchNorm) from deciding alone, and makes LC's direct compression (mu = 0) exactly pos-cvx's choice.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from edgecomp.factor import Spectrum, svd_factors, unmatricize
from edgecomp.ranks.choices import ChoiceLayer, select_choices_min_error
from edgecomp.ranks.problem import RankProblem

ChoicesFn = Callable[[str, torch.Tensor], "ChoiceLayer | Spectrum | None"]
ProjectFn = Callable[[str, torch.Tensor, ChoiceLayer, int], torch.Tensor]


def tucker2_choices_fn(cost) -> ChoicesFn:
    """choices_fn of a ModelCost: tucker2_choices for its "tucker2" layers, None (an SVD layer) otherwise."""
    from edgecomp.compression.problem import tucker2_choices

    by_name = {lc.name: lc for lc in cost.decomposable}

    def choices(name: str, weight: torch.Tensor) -> ChoiceLayer | None:
        lc = by_name[name]
        return tucker2_choices(lc, weight) if lc.decomposition.scheme == "tucker2" else None

    return choices


def tucker2_projection(name: str, weight: torch.Tensor, layer: ChoiceLayer, choice: int) -> torch.Tensor:
    """Delta = the HOOI Tucker-2 reconstruction of `weight` at layer.pair(choice), or `weight` when dense."""
    from edgecomp.factor.tucker import tucker2_hooi

    if not layer.is_factored(choice):
        return weight.detach().clone()
    r1, r2 = layer.pair(choice)
    fit = tucker2_hooi(weight.detach().to("cpu", torch.float64).numpy(), r1, r2)
    return torch.as_tensor(fit.reconstruct(), dtype=weight.dtype, device=weight.device)


def fixed_pair_projection(weight: torch.Tensor, pair) -> torch.Tensor:
    """Delta at fixed Tucker-2 ranks (r1, r2) (LC with ranks from another method): the HOOI reconstruction."""
    from edgecomp.factor.tucker import tucker2_hooi

    fit = tucker2_hooi(weight.detach().to("cpu", torch.float64).numpy(), int(pair[0]), int(pair[1]))
    return torch.as_tensor(fit.reconstruct(), dtype=weight.dtype, device=weight.device)


class AutoChoices:
    """choices_fn and project_fn of scheme auto's C step: each conv layer's options are rebuilt from X_i
    (edgecomp.compression.problem.auto_spectrum: the spatial / channel SVDs and a CP fit of X_i by `cp_solver`
    at the layer's largest CP rank, plus its Tucker-2 pairs, Pareto-pruned), Linear and 1x1 layers stay SVD
    layers. The projection of a chosen option is its best fit of X_i: the truncated SVD (spatial, channel),
    the HOOI fit (tucker2), or the r largest-weight CP terms refitted at rank r by ALS
    (edgecomp.factor.cp.refit, as the build does); the dense option is X_i itself. The auto Spectrum of the
    last C step (`spectra`) is what the build reads."""

    def __init__(self, cost, cp_solver: str = "als", seed: int = 0):
        self.by_name = {lc.name: lc for lc in cost.decomposable}
        self.cp_solver, self.seed = cp_solver, seed
        self.spectra: dict[str, Spectrum] = {}

    def __call__(self, name: str, weight: torch.Tensor) -> Spectrum | None:
        from edgecomp.compression.problem import auto_spectrum

        lc = self.by_name[name]
        if lc.decomposition.scheme != "auto":
            return None
        self.spectra[name] = auto_spectrum(lc, weight.detach().cpu(), cp_solver=self.cp_solver, seed=self.seed)
        return self.spectra[name]

    def project(self, name: str, weight: torch.Tensor, layer: ChoiceLayer, choice: int) -> torch.Tensor:
        scheme = layer.scheme(choice)
        if scheme in ("dense", "tucker2"):
            return tucker2_projection(name, weight, layer, choice)
        rank = int(layer.choice_ranks[choice - 1])
        part = self.spectra[name].parts[scheme]
        if scheme == "cp":
            from edgecomp.factor.cp import refit

            kernel = weight.detach().to("cpu", torch.float64).numpy()
            fitted = refit(kernel, part.cp, rank).fit.reconstruct()
            return torch.as_tensor(fitted, dtype=weight.dtype, device=weight.device)
        return truncate(part, rank, scheme, tuple(weight.shape), weight.dtype).to(weight.device)


def choice_problem(inputs: Mapping[str, torch.Tensor], layers, template: RankProblem, choices_fn: ChoicesFn,
                   ) -> tuple[RankProblem, dict]:
    """The knapsack problem of this C step: `template`'s budgets and fixed costs, each layer's options made
    from its input (a ChoiceLayer from choices_fn, or an SVD spectrum). Returns (problem, SVD spectra)."""
    out, spectra = [], {}
    for layer in layers:
        x = inputs[layer.name]
        choice = choices_fn(layer.name, x)
        if isinstance(choice, Spectrum):  # scheme auto: the options and the fits they come from (for the build)
            spectra[layer.name], choice = choice, choice.choices
        if choice is None:
            spectra[layer.name] = svd_factors(x, layer.scheme, name=layer.name)
            choice = layer.decomposition.spectrum(layer.name, spectra[layer.name].sigma.numpy())
        out.append(choice)
    problem = RankProblem(tuple(out), template.compute_budget, template.param_budget, template.fixed_compute,
                          template.fixed_params, template.compute_unit)
    return problem, spectra


def truncate(spectrum, rank: int, scheme: str, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """Delta = unmat(P_r V_r^T), the rank-`rank` truncated SVD in the weight's shape."""
    matrix = spectrum.P[:, :rank] @ spectrum.V[:, :rank].T
    return unmatricize(matrix, scheme, shape).to(dtype).contiguous()


def select_and_project(inputs: Mapping[str, torch.Tensor], layers, template: RankProblem, choices_fn: ChoicesFn,
                       project_fn: ProjectFn | None = None):
    """Steps 1-3 of the module docstring. Returns (problem, selection, deltas, spectra, ranks, squared error):
    ranks[name] is (r1, r2) for a factored choice layer, the dense layer's (c, f) otherwise, or the SVD rank;
    squared error = sum_i ||X_i - Delta_i||_F^2 (measured)."""
    project_fn = project_fn or tucker2_projection
    problem, spectra = choice_problem(inputs, layers, template, choices_fn)
    selection = select_choices_min_error(problem, method="lc")
    deltas, ranks, error = {}, {}, 0.0
    for layer, spec_layer, k in zip(layers, problem.layers, selection.ranks):
        x, k = inputs[layer.name], int(k)
        if isinstance(spec_layer, ChoiceLayer):
            delta = project_fn(layer.name, x, spec_layer, k).to(x.dtype).to(x.device)
            ranks[layer.name] = (_auto_entry(spec_layer, k) if spec_layer.mixed else spec_layer.pair(k))
        else:
            delta = truncate(spectra[layer.name], k, layer.scheme, layer.shape, x.dtype).to(x.device)
            ranks[layer.name] = k
        deltas[layer.name] = delta
        error += float(torch.sum((x.double() - delta.double()) ** 2))
    return problem, selection, deltas, spectra, ranks, error



def _auto_entry(layer: ChoiceLayer, choice: int) -> dict:
    """What the build takes for a mixed (scheme auto) layer's choice: {"scheme": S, "rank": R}."""
    entry = layer.rank_entry(choice)
    return {"scheme": "dense"} if entry is None else {"scheme": layer.scheme(choice), "rank": entry}
