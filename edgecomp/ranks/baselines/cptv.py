"""CPTV, "a certain percentage of total variation": each layer keeps the fewest components that
hold a fraction beta of its spectral energy,

    r_i(beta) = min { r : E_i(r) >= beta },   E_i(r) = sum_{j<=r} sigma_ij^p / sum_j sigma_ij^p,

with one beta for the whole network, the largest whose ranks fit every budget (compute, params and the
problem's extra budgets, e.g. latency).

Energy: p = 2 by default (sigma^2, the variance of the weight along each singular direction, so
E_i(r) is the kept fraction of ||W_i||_F^2). This is COBLA's reference code heuristic 0 ("percentage
of the total squared eigenvalue", chongli-uw/cobla DnnUtili.py); its heuristic 1 uses the sum of
singular values, available here as power=1. Differences from that code, on purpose: it bisects
beta on the MAC budget only (stopping within 2 % of it), and keeps one component more than the
threshold rank; here beta is the exact largest value satisfying both budgets and r_i is the
threshold rank itself.

r_i(beta) is a non-decreasing step function that changes only at the values E_i(r), so the
bisection runs over those breakpoints (exact). A tighter budget can only lower beta, so every rank
and both costs are monotone in the budget.

A problem with choice layers (schemes tucker2, auto) takes each layer's cheapest choice keeping a fraction
beta of its energy (edgecomp.ranks.baselines.on_choices.select_choices_cptv; power 2 only).
"""

from __future__ import annotations

import numpy as np

from edgecomp.ranks.baselines._common import (
    canonical_ranks,
    cost_report,
    cumulative_energy,
    largest_feasible,
    require_satisfiable,
)
from edgecomp.ranks.baselines.on_choices import select_choices_cptv
from edgecomp.ranks.choices import has_choice_layers
from edgecomp.ranks.problem import RankProblem, RankSelection


def threshold_ranks(cums: list[np.ndarray], beta: float) -> np.ndarray:
    """r_i = min { r : E_i(r) >= beta } from each layer's cumulative energy E_i (`cumulative_energy`)."""
    return np.array([min(int(np.searchsorted(c, beta, side="left")) + 1, c.size) for c in cums], dtype=np.int64)


def select_cptv(problem: RankProblem, *, power: float = 2.0) -> RankSelection:
    if power <= 0:
        raise ValueError(f"cptv: power must be positive, got {power}")
    if has_choice_layers(problem):
        if power != 2.0:
            raise ValueError("cptv: choice layers keep squared-error energy only (power 2)")
        return select_choices_cptv(problem)
    require_satisfiable(problem, "cptv")
    cums = [cumulative_energy(layer.sigma, power) for layer in problem.layers]
    breakpoints = np.unique(np.concatenate([[0.0]] + cums))
    beta, raw, evals = largest_feasible(problem, breakpoints, lambda b: threshold_ranks(cums, b))
    ranks = canonical_ranks(problem, raw)
    info = {"beta": beta, "power": float(power), "n_breakpoints": int(breakpoints.size),
            "cost_evaluations": evals, "raw_ranks": raw.tolist()}
    info.update(cost_report(problem, ranks))
    return RankSelection(method="cptv", ranks=ranks, info=info)
