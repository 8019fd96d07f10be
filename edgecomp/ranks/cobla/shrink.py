"""Problem shrinking for COBLA: fix the masks that cheap heuristics agree on.

The reference implementation (chongli-uw/cobla, mask_functions.compute_reduced_index) runs
its rank heuristics twice, under a stricter and under a looser budget, and per layer

* keeps on (fixes m = 1) the leading singular components that *every* heuristic keeps even
  under the stricter budget,
* keeps off (fixes m = 0) the trailing components that *every* heuristic drops even under the
  looser budget,

so only the band in between enters SQP. Its budgets are fractions of the original cost c:
stricter max(1 - (1 - c) * 1.8, 0.03), looser min(1 - (1 - c) * 0.2, 1) (`heuristic_budgets`).
Its index scan leaves the boundary component on each side free (the last unanimously kept
and the first unanimously dropped one), which `margin=1` reproduces, except that a layer every
heuristic keeps whole is fixed whole.

With heuristics returning ranks (keep the top r_i components of layer i), "every heuristic
keeps j under the stricter budget" means j < min_h strict_h[i], and "every heuristic drops j
under the looser budget" means j >= max_h loose_h[i]. Component 0 is never fixed to 0 (every
layer keeps rank >= 1). If a heuristic is not monotone in the budget the two ranges can
overlap; overlapping components are left free (the heuristics contradict each other there).
"""

from __future__ import annotations

import numpy as np

from edgecomp.ranks.problem import RankProblem


def heuristic_budgets(
    problem: RankProblem,
    strict_factor: float = 1.8,
    loose_factor: float = 0.2,
    min_fraction: float = 0.03,
) -> tuple[RankProblem, RankProblem]:
    """(stricter, looser) copies of the problem for running the shrinking heuristics.

    With c = budget / original cost per metric: stricter = max(1 - (1 - c) * strict_factor,
    min_fraction), looser = min(1 - (1 - c) * loose_factor, 1), never looser / stricter than the
    budget itself (the reference implementation's defaults).
    """
    if strict_factor < 1 or not 0 <= loose_factor <= 1 or not 0 < min_fraction <= 1:
        raise ValueError("need strict_factor >= 1, 0 <= loose_factor <= 1, 0 < min_fraction <= 1")
    orig_compute, orig_params = problem.original_cost
    if orig_compute <= 0 or orig_params <= 0:
        raise ValueError("the original model must have a positive compute cost and parameters")
    c_compute, c_par = problem.compute_budget / orig_compute, problem.param_budget / orig_params
    strict = [min(c, max(1 - (1 - c) * strict_factor, min_fraction)) for c in (c_compute, c_par)]
    loose = [max(c, min(1 - (1 - c) * loose_factor, 1.0)) for c in (c_compute, c_par)]
    return (problem.with_budgets(strict[0] * orig_compute, strict[1] * orig_params),
            problem.with_budgets(loose[0] * orig_compute, loose[1] * orig_params))


def shrink_from_heuristics(
    problem: RankProblem,
    strict_ranks: list[np.ndarray],
    loose_ranks: list[np.ndarray],
    *,
    margin: int = 1,
) -> np.ndarray:
    """The `fixed` vector for `solve_relaxed`: -1 free, 1 fixed on, 0 fixed off (see module doc).

    strict_ranks / loose_ranks: one rank array per heuristic (ranks per layer), computed under
    the stricter / looser budget. margin: boundary components left free on each side.
    """
    if not strict_ranks or not loose_ranks:
        raise ValueError("need at least one heuristic solution under each budget")
    if margin < 0:
        raise ValueError("margin must be >= 0")
    n_layers = len(problem.layers)
    K = problem.max_ranks

    def stack(rank_list, what):
        arr = np.array([np.asarray(r, dtype=np.int64).reshape(-1) for r in rank_list])
        if arr.ndim != 2 or arr.shape[1] != n_layers:
            raise ValueError(f"{what}: every rank array needs {n_layers} entries")
        if np.any(arr < 0) or np.any(arr > K):
            raise ValueError(f"{what}: ranks must lie in [0, max_rank] per layer")
        return arr

    unanimous = stack(strict_ranks, "strict_ranks").min(axis=0)
    # j < keep_upto -> 1; a layer every heuristic keeps whole is fixed whole (as the reference does)
    keep_upto = np.where(unanimous >= K, K, unanimous - margin)
    drop_from = np.maximum(stack(loose_ranks, "loose_ranks").max(axis=0) + margin, 1)  # j >= drop_from -> 0
    fixed = np.full(problem.n_masks, -1, dtype=np.int64)
    for i, (lo, hi) in enumerate(zip(problem.offsets[:-1], problem.offsets[1:])):
        j = np.arange(hi - lo)
        on = j < keep_upto[i]
        off = j >= drop_from[i]
        fixed[lo:hi] = np.where(on & ~off, 1, np.where(off & ~on, 0, -1))
    return fixed
