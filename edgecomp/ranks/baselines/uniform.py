"""Uniform rank selection: the same kept fraction alpha of the max rank in every layer.

    r_i(alpha) = max(1, floor(alpha * K_i)),   alpha in [0, 1]

and alpha is the largest value whose ranks fit every budget (N_C(r) <= N_C,max,
N_M(r) <= N_M,max and the problem's extra budgets, break-even rule applied). r_i(alpha) only changes at the breakpoints
alpha = r / K_i, so the bisection runs over the sorted breakpoints and returns the exact largest
feasible alpha (any alpha up to the next breakpoint gives the same ranks). A tighter budget can
only lower alpha, so every rank and both costs are monotone in the budget.

A problem with choice layers: scheme tucker2 keeps the fraction alpha of both Tucker-2 ranks,
(floor(alpha c), floor(alpha f)) (edgecomp.ranks.choices.select_choices_uniform); scheme auto, whose layers mix
schemes, keeps the fraction alpha of each layer's dense cost (its least-error choice costing at most alpha
times the dense layer in both costs: edgecomp.ranks.baselines.on_choices.select_choices_uniform_cost).
"""

from __future__ import annotations

import numpy as np

from edgecomp.ranks.baselines._common import canonical_ranks, cost_report, largest_feasible, require_satisfiable
from edgecomp.ranks.baselines.on_choices import select_choices_uniform_cost
from edgecomp.ranks.choices import has_choice_layers, has_mixed_layers, select_choices_uniform
from edgecomp.ranks.problem import RankProblem, RankSelection

# alpha * K is at least 1/K_max away from an integer unless it is one, so this nudge only
# undoes floating-point error at the breakpoints themselves (e.g. (3/7) * 7 = 2.9999999999999996).
_FLOOR_EPS = 1e-9


def uniform_ranks(problem: RankProblem, alpha: float) -> np.ndarray:
    k = problem.max_ranks
    return np.clip(np.floor(alpha * k + _FLOOR_EPS).astype(np.int64), 1, k)


def select_uniform(problem: RankProblem) -> RankSelection:
    if has_mixed_layers(problem):
        return select_choices_uniform_cost(problem)
    if has_choice_layers(problem):
        return select_choices_uniform(problem)
    require_satisfiable(problem, "uniform")
    k = problem.max_ranks
    breakpoints = np.unique(np.concatenate([[0.0]] + [np.arange(1, ki + 1) / ki for ki in k]))
    alpha, raw, evals = largest_feasible(problem, breakpoints, lambda a: uniform_ranks(problem, a))
    ranks = canonical_ranks(problem, raw)
    info = {"alpha": alpha, "n_breakpoints": int(breakpoints.size), "cost_evaluations": evals,
            "raw_ranks": raw.tolist()}
    info.update(cost_report(problem, ranks))
    return RankSelection(method="uniform", ranks=ranks, info=info)
