"""Pieces shared by the baseline selectors: effective energies, canonical ranks, reports, searches.

Convention for every selector here: a rank at or above a layer's break-even rank b builds the
*unfactored* layer (original cost, the whole weight kept), so it is reported as the full rank K
(`canonical_ranks`) and its spectral energy counts as 1 (`effective_log_energy`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgecomp.errors import UserInputError
from edgecomp.ranks.knapsack import extra_cost_info, infeasible_error
from edgecomp.ranks.problem import LayerSpectrum, RankProblem


def require_satisfiable(problem: RankProblem, method: str) -> None:
    """Raise InfeasibleBudgetError (with the minimum compute/params) if rank 1 everywhere does not fit."""
    if not problem.is_satisfiable():
        raise infeasible_error(problem, method)


def canonical_ranks(problem: RankProblem, ranks) -> np.ndarray:
    """Map every rank >= break-even (the layer stays unfactored) to the layer's max rank K."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out = ranks.copy()
    for i, layer in enumerate(problem.layers):
        if ranks[i] >= layer.break_even_rank:
            out[i] = layer.max_rank
    return out


def cumulative_energy(sigma: np.ndarray, power: float = 2.0) -> np.ndarray:
    """c[r-1] = sum_{j<=r} sigma_j^p / sum_j sigma_j^p, exactly 1 at r = K (all ones if sigma = 0)."""
    s = np.asarray(sigma, dtype=np.float64) ** power
    total = float(s.sum())
    if total <= 0:
        return np.ones(s.size)
    c = np.minimum(np.cumsum(s) / total, 1.0)
    c[-1] = 1.0
    return c


def effective_log_energy(layer: LayerSpectrum) -> np.ndarray:
    """log E_i(r) for r = 1..K (index r-1), with E = 1 for the unfactored ranks r >= b.

    E_i(r) = sum_{j<=r} sigma_ij^2 / sum_j sigma_ij^2, the kept fraction of ||W_i||_F^2.
    """
    e = cumulative_energy(layer.sigma)
    ranks = np.arange(1, layer.max_rank + 1)
    with np.errstate(divide="ignore"):
        log_e = np.log(e)
    return np.where(ranks >= layer.break_even_rank, 0.0, log_e)


def pos_objective(problem: RankProblem, ranks) -> float:
    """Product-of-sums objective in logs: sum_i log E_i(r_i) (0 = nothing truncated)."""
    return float(sum(effective_log_energy(layer)[int(r) - 1] for layer, r in zip(problem.layers, ranks)))


def cost_report(problem: RankProblem, ranks) -> dict:
    """Costs of `ranks` against the budgets, for RankSelection.info (report.json's selection_info, whose
    keys say "macs" / "mac_budget" for the compute cost, in "compute_unit": MACs or ms; the extra budgets'
    costs, budgets and units under "extra_costs" / "extra_budgets" / "extra_units")."""
    compute, params = problem.cost(ranks)
    return {
        "macs": compute,
        "params": params,
        "mac_budget": float(problem.compute_budget),
        "compute_unit": problem.compute_unit,
        "param_budget": float(problem.param_budget),
        "meets_budgets": bool(problem.feasible(ranks)),
        **extra_cost_info(problem, ranks),
        "pos_objective": pos_objective(problem, ranks),
        "factored": [bool(layer.is_factored(int(r))) for layer, r in zip(problem.layers, ranks)],
    }


def largest_feasible(problem: RankProblem, breakpoints: np.ndarray,
                     ranks_at: Callable[[float], np.ndarray]) -> tuple[float, np.ndarray, int]:
    """Largest breakpoint t whose ranks_at(t) fit every budget, by bisection over the sorted breakpoints.

    Requires ranks_at to be elementwise non-decreasing in t (so costs are too, feasibility is
    monotone) and breakpoints[0] to be feasible. Between consecutive breakpoints the ranks do not
    change, so the answer is the exact largest feasible parameter (up to the next breakpoint).
    Returns (t, ranks, number of cost evaluations).
    """
    lo, hi = 0, breakpoints.size - 1
    evals = 0
    if problem.feasible(ranks_at(float(breakpoints[hi]))):
        return float(breakpoints[hi]), ranks_at(float(breakpoints[hi])), 1
    evals += 1
    while hi - lo > 1:  # invariant: breakpoints[lo] feasible, breakpoints[hi] infeasible
        mid = (lo + hi) // 2
        evals += 1
        if problem.feasible(ranks_at(float(breakpoints[mid]))):
            lo = mid
        else:
            hi = mid
    return float(breakpoints[lo]), ranks_at(float(breakpoints[lo])), evals


def matrix_dims(layer: LayerSpectrum) -> tuple[int, int]:
    """(L, M) with L <= M of the layer's matricization; its spectrum must be the full one (L values)."""
    from edgecomp.ranks.choices import ChoiceLayer

    if isinstance(layer, ChoiceLayer):
        raise UserInputError(f"layer {layer.name}: its options are explicit choices (schemes tucker2, auto), not a "
                             "spectrum of singular values, which this rank selector needs")
    rows, cols = (int(x) for x in layer.shape)
    if rows <= 0 or cols <= 0:
        raise UserInputError(f"layer {layer.name}: the matricization shape (rows, cols) is needed for "
                             f"this rank selector, got {layer.shape}")
    small, large = min(rows, cols), max(rows, cols)
    if layer.max_rank != small:
        raise UserInputError(f"layer {layer.name}: the spectrum has {layer.max_rank} singular values but a "
                             f"{rows}x{cols} matrix has {small}; this selector needs the full spectrum")
    return small, large
