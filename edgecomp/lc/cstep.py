"""The low-rank C step: Theta = Pi(w - lambda/mu), per compressed layer, on its matricization.

For a layer with matricization X = mat(w - lambda/mu) = U diag(sigma) V^T (scheme 'spatial',
'channel' or 'linear', see edgecomp.factor.schemes), the best rank-r approximation in Frobenius
norm is the truncated SVD (Eckart-Young)

    Delta(Theta) = unmat( sum_{j <= r} sigma_j u_j v_j^T ),   ||X - Delta||_F^2 = sum_{j > r} sigma_j^2.

Ranks are either fixed, or chosen in the C step under the device budgets (Idelbayev &
Carreira-Perpinan, CVPR 2020, eq. 5 with hard budgets instead of a cost penalty):

    min_r  sum_i sum_{j > r_i} sigma_ij^2   s.t.  N_C(r) <= N_C,max,  N_M(r) <= N_M,max

solved exactly by edgecomp.ranks.knapsack.select_min_error on the spectra of the current
w - lambda/mu, so every C step returns a model that fits both budgets. A chosen rank at or above
the layer's break-even rank leaves the layer unfactored (its cost is the original layer's); the
selector then reports the full rank K and Delta(Theta) = X.

Layers with explicit choices (Tucker-2 convs, whose (r1, r2) costs are bilinear): with a `choices_fn`,
the C step recomputes their choices from w - lambda/mu and projects onto the one the exact knapsack picks
(edgecomp.lc.choices); with fixed ranks, a Tucker-2 layer's rank is its pair (r1, r2) and Delta is the
HOOI reconstruction at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.factor import Spectrum, factorize_model, get_module, svd_factors
from edgecomp.graph import ModelCost
from edgecomp.graph.cost import Decomposition
from edgecomp.lc.choices import ChoicesFn, ProjectFn, truncate
from edgecomp.ranks.problem import RankProblem, RankSelection


@dataclass(frozen=True)
class CompressedLayer:
    """A layer under the constraint w_i = Delta(Theta_i): its name, weight shape and decomposition."""

    name: str
    shape: tuple[int, ...]
    decomposition: Decomposition

    @property
    def scheme(self) -> str:
        return self.decomposition.scheme

    @property
    def max_rank(self) -> int:
        return self.decomposition.max_rank

    @property
    def break_even_rank(self) -> int:
        return self.decomposition.break_even_rank


@dataclass
class CStepResult:
    deltas: dict[str, torch.Tensor]  # Delta(Theta_i), in the weight's shape and dtype
    spectra: dict[str, Spectrum]  # SVD of mat(w_i - lambda_i/mu) (float64)
    ranks: dict[str, int | tuple[int, int]]  # rank kept per layer (K = max rank: left unfactored); Tucker-2: (r1, r2)
    squared_error: float  # sum_i ||X_i - Delta_i||_F^2
    info: dict = field(default_factory=dict)
    problem: RankProblem | None = None  # choice C step: this step's problem (its ChoiceLayers) ...
    selection: RankSelection | None = None  # ... and the knapsack's choice numbers / ranks in it


def compressed_layers(model: nn.Module, cost: ModelCost, names=None) -> list[CompressedLayer]:
    """The decomposable layers of `cost` (all of them, or those in `names`, in model order)."""
    decomposable = {lc.name: lc for lc in cost.decomposable}
    if names is not None:
        unknown = [n for n in names if n not in decomposable]
        if unknown:
            skipped = {lc.name: lc.skip_reason for lc in cost.skipped}
            details = ", ".join(f"{n} ({skipped[n]})" if n in skipped else f"{n} (no such Conv2d/Linear layer)"
                                for n in unknown[:5])
            raise UserInputError(f"cannot compress {details}; decomposable layers: {', '.join(decomposable) or 'none'}")
        wanted = set(names)
        chosen = [lc for lc in cost.decomposable if lc.name in wanted]
    else:
        chosen = cost.decomposable
    if not chosen:
        raise UserInputError("the model has no decomposable Conv2d/Linear layer to compress")
    return [CompressedLayer(lc.name, tuple(get_module(model, lc.name).weight.shape), lc.decomposition) for lc in chosen]


def _fixed_costs(layers: list[CompressedLayer], cost: ModelCost) -> tuple[float, float]:
    chosen = {layer.name for layer in layers}
    fixed_macs = cost.fixed_macs + sum(lc.macs for lc in cost.decomposable if lc.name not in chosen)
    fixed_params = cost.fixed_params + sum(lc.params for lc in cost.decomposable if lc.name not in chosen)
    return float(fixed_macs), float(fixed_params)


def budget_template(layers: list[CompressedLayer], cost: ModelCost, mac_budget: float,
                    param_budget: float) -> RankProblem:
    """The budgets and fixed costs (every layer not in `layers`) with no layers: what the choice C step
    fills with each step's options (edgecomp.lc.choices.choice_problem)."""
    fixed_macs, fixed_params = _fixed_costs(layers, cost)
    return RankProblem((), float(mac_budget), float(param_budget), fixed_macs, fixed_params)


def rank_problem(layers: list[CompressedLayer], cost: ModelCost, spectra: Mapping[str, Spectrum],
                 mac_budget: float, param_budget: float, extra: tuple = ()) -> RankProblem:
    """The budgeted rank problem of these layers (compute in MACs); every other layer is a fixed cost.
    extra: more budgets (edgecomp.ranks.problem.LinearBudget, e.g. latency), one entry per layer in order."""
    fixed_macs, fixed_params = _fixed_costs(layers, cost)
    return RankProblem(
        layers=tuple(layer.decomposition.spectrum(layer.name, spectra[layer.name].sigma.numpy()) for layer in layers),
        compute_budget=float(mac_budget),
        param_budget=float(param_budget),
        fixed_compute=float(fixed_macs),
        fixed_params=float(fixed_params),
        extra=tuple(extra),
    )


def c_step(
    inputs: Mapping[str, torch.Tensor],
    layers: list[CompressedLayer],
    *,
    ranks: Mapping[str, int] | None = None,
    problem: RankProblem | None = None,
    choices_fn: ChoicesFn | None = None,
    project_fn: ProjectFn | None = None,
) -> CStepResult:
    """Pi(inputs): truncated SVD of every layer at a fixed rank, or at budget-optimal ranks.

    choices_fn(name, X) -> ChoiceLayer | None (with `problem`, whose budgets and fixed costs apply):
    the choice C step of edgecomp.lc.choices (project_fn: its projection, default Tucker-2 HOOI).
    Fixed ranks may be Tucker-2 pairs (r1, r2) for "tucker2" layers."""
    if (ranks is None) == (problem is None):
        raise ValueError("give exactly one of ranks and problem")
    if problem is not None and choices_fn is not None:
        return _choice_c_step(inputs, layers, problem, choices_fn, project_fn)
    if ranks is not None and any(layer.scheme == "tucker2" for layer in layers):
        return _fixed_pairs_c_step(inputs, layers, ranks)
    spectra = {layer.name: svd_factors(inputs[layer.name], layer.scheme) for layer in layers}
    info: dict = {}
    if problem is not None:
        from edgecomp.ranks.knapsack import select_min_error

        selection = select_min_error(problem, sigma_override=[spectra[l.name].sigma.numpy() for l in layers])
        chosen = {layer.name: int(r) for layer, r in zip(layers, selection.ranks)}
        info = {k: selection.info.get(k) for k in ("macs", "params", "solver_status", "solve_time_s")}
    else:
        chosen = {layer.name: int(ranks[layer.name]) for layer in layers}
    deltas, error = {}, 0.0
    for layer in layers:
        spec, r = spectra[layer.name], chosen[layer.name]
        x = inputs[layer.name]
        deltas[layer.name] = truncate(spec, r, layer.scheme, layer.shape, x.dtype).to(x.device)
        error += float(torch.sum(spec.sigma[r:] ** 2))
    return CStepResult(deltas=deltas, spectra=spectra, ranks=chosen, squared_error=error, info=info)


def _choice_c_step(inputs, layers, problem, choices_fn, project_fn) -> CStepResult:
    from edgecomp.lc.choices import select_and_project

    step_problem, selection, deltas, spectra, chosen, error = select_and_project(
        inputs, layers, problem, choices_fn, project_fn)
    info = {k: selection.info.get(k) for k in ("macs", "params", "solver_status", "solve_time_s")}
    return CStepResult(deltas=deltas, spectra=spectra, ranks=chosen, squared_error=error, info=info,
                       problem=step_problem, selection=selection)


def _fixed_pairs_c_step(inputs, layers, ranks) -> CStepResult:
    """Fixed ranks with Tucker-2 layers: HOOI at their pairs, truncated SVD elsewhere."""
    from edgecomp.lc.choices import fixed_pair_projection

    deltas, spectra, chosen, error = {}, {}, {}, 0.0
    for layer in layers:
        x, r = inputs[layer.name], ranks[layer.name]
        if layer.scheme == "tucker2":
            delta = fixed_pair_projection(x, r)
            chosen[layer.name] = (int(r[0]), int(r[1]))
        else:
            spectra[layer.name] = svd_factors(x, layer.scheme)
            delta = truncate(spectra[layer.name], int(r), layer.scheme, layer.shape, x.dtype).to(x.device)
            chosen[layer.name] = int(r)
        deltas[layer.name] = delta
        error += float(torch.sum((x.double() - delta.double()) ** 2))
    return CStepResult(deltas=deltas, spectra=spectra, ranks=chosen, squared_error=error)


def check_fixed_ranks(ranks: Mapping[str, int], layers: list[CompressedLayer]) -> dict[str, int | tuple[int, int]]:
    out = {}
    for layer in layers:
        r = ranks[layer.name]
        if layer.scheme == "tucker2":
            out[layer.name] = _check_pair(layer, r)
            continue
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= int(r) <= layer.max_rank:
            raise UserInputError(f"layer {layer.name}: rank must be an integer in 1..{layer.max_rank}, got {r!r}")
        out[layer.name] = int(r)
    return out


def _check_pair(layer: CompressedLayer, r) -> tuple[int, int]:
    f, c = layer.shape[:2]
    ok = isinstance(r, (tuple, list)) and len(r) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in r)
    if not ok or not (1 <= int(r[0]) <= c and 1 <= int(r[1]) <= f):
        raise UserInputError(f"layer {layer.name} is factored by Tucker-2: its ranks are a pair [r1, r2] with "
                             f"1 <= r1 <= {c} and 1 <= r2 <= {f}, got {r!r}")
    return int(r[0]), int(r[1])


def _is_factored(layer: CompressedLayer, result: CStepResult, index: int) -> bool:
    if result.problem is not None:  # choice C step: the knapsack's own break-even rule
        return result.problem.layers[index].is_factored(int(result.selection.ranks[index]))
    rank = result.ranks[layer.name]
    return True if isinstance(rank, tuple) else rank < layer.break_even_rank


@torch.no_grad()
def build_compressed(model: nn.Module, layers: list[CompressedLayer], result: CStepResult, scheme: str) -> tuple[nn.Module, dict[str, int]]:
    """Delta(Theta) as a model: layers below their break-even rank become factored layers built from
    the C step's own SVD factors (factorize_model); the others keep a dense Delta(Theta). A factored
    Tucker-2 choice is built by HOOI from Delta, which has exactly its ranks, so the layers reproduce it.
    Returns (model copy, ranks of the factored layers; Tucker-2: (r1, r2))."""
    import copy

    out = copy.deepcopy(model)
    factored = {}
    for i, layer in enumerate(layers):
        get_module(out, layer.name).weight.copy_(result.deltas[layer.name])
        if _is_factored(layer, result, i):
            factored[layer.name] = result.ranks[layer.name]
    spectra = {name: result.spectra[name] for name in factored if name in result.spectra}
    return factorize_model(out, factored, scheme, spectra=spectra, copy=False), factored
