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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.factor import Spectrum, factorize_model, get_module, svd_factors, unmatricize
from edgecomp.graph import ModelCost
from edgecomp.graph.cost import Decomposition
from edgecomp.ranks.problem import RankProblem


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
    ranks: dict[str, int]  # rank kept per layer (K = max rank: layer left unfactored)
    squared_error: float  # sum_i ||X_i - Delta_i||_F^2
    info: dict = field(default_factory=dict)


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


def rank_problem(layers: list[CompressedLayer], cost: ModelCost, spectra: Mapping[str, Spectrum],
                 mac_budget: float, param_budget: float) -> RankProblem:
    """The budgeted rank problem of these layers (compute in MACs); every other layer is a fixed cost."""
    chosen = {layer.name for layer in layers}
    fixed_macs = cost.fixed_macs + sum(lc.macs for lc in cost.decomposable if lc.name not in chosen)
    fixed_params = cost.fixed_params + sum(lc.params for lc in cost.decomposable if lc.name not in chosen)
    return RankProblem(
        layers=tuple(layer.decomposition.spectrum(layer.name, spectra[layer.name].sigma.numpy()) for layer in layers),
        compute_budget=float(mac_budget),
        param_budget=float(param_budget),
        fixed_compute=float(fixed_macs),
        fixed_params=float(fixed_params),
    )


def truncate(spectrum: Spectrum, rank: int, scheme: str, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """Delta = unmat(P_r V_r^T), the rank-`rank` truncated SVD in the weight's shape."""
    matrix = spectrum.P[:, :rank] @ spectrum.V[:, :rank].T
    return unmatricize(matrix, scheme, shape).to(dtype).contiguous()


def c_step(
    inputs: Mapping[str, torch.Tensor],
    layers: list[CompressedLayer],
    *,
    ranks: Mapping[str, int] | None = None,
    problem: RankProblem | None = None,
) -> CStepResult:
    """Pi(inputs): truncated SVD of every layer at a fixed rank, or at budget-optimal ranks."""
    if (ranks is None) == (problem is None):
        raise ValueError("give exactly one of ranks and problem")
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


def check_fixed_ranks(ranks: Mapping[str, int], layers: list[CompressedLayer]) -> dict[str, int]:
    out = {}
    for layer in layers:
        r = ranks[layer.name]
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= int(r) <= layer.max_rank:
            raise UserInputError(f"layer {layer.name}: rank must be an integer in 1..{layer.max_rank}, got {r!r}")
        out[layer.name] = int(r)
    return out


@torch.no_grad()
def build_compressed(model: nn.Module, layers: list[CompressedLayer], result: CStepResult, scheme: str) -> tuple[nn.Module, dict[str, int]]:
    """Delta(Theta) as a model: layers below their break-even rank become factored layers built from
    the C step's own SVD factors (factorize_model); the others keep a dense Delta(Theta).
    Returns (model copy, ranks of the factored layers)."""
    import copy

    out = copy.deepcopy(model)
    factored = {}
    for layer in layers:
        get_module(out, layer.name).weight.copy_(result.deltas[layer.name])
        if result.ranks[layer.name] < layer.break_even_rank:
            factored[layer.name] = result.ranks[layer.name]
    spectra = {name: result.spectra[name] for name in factored}
    return factorize_model(out, factored, scheme, spectra=spectra, copy=False), factored
