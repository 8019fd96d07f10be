"""Product-of-sums (PoS) rank selection, greedy solver (Zhang et al., "Accelerating very deep
convolutional networks for classification and detection", TPAMI 2016, eq. 13-14 and Sec. 3.5;
COBLA's "PoS" baseline).

Objective (maximized):  prod_i E_i(r_i), i.e.  sum_i log E_i(r_i),
E_i(r) = sum_{j<=r} sigma_ij^2 / sum_j sigma_ij^2 (E = 1 for an unfactored layer, r >= b_i).

The greedy, exactly:
  1. Start with every layer at full rank K_i (unfactored when b_i <= K_i).
  2. Each layer offers one move: from a factored rank r > 1 to r - 1; from the unfactored layer
     to the largest factored rank b_i - 1 (the break-even step: it saves
     original_cost - cost(b_i - 1) at once); no move at rank 1 or when b_i = 1.
  3. Score of a move = loss / normalized saving, with
        loss   = log E_i(r) - log E_i(r')                     (>= 0)
        saving = w_C * dCompute / C_0 + w_M * dParams / M_0 + sum_l dCost_l / X_l,
     C_0, M_0 the original compute (MACs or ms) / params of the decomposable layers, (w_C, w_M) = `weights`
     (default (1, 1)); the last sum runs over the problem's extra budgets (e.g. latency), X_l their dense
     cost of the decomposable layers, with weight 1. Zhang et al.'s measure is (relative loss) / (relative complexity saving);
     -log(1 - d eps / eps) is the log form of their relative loss d eps / eps.
  4. Apply the move with the smallest score (ties: lowest layer index); repeat 3-4 until
     every budget holds (extra ones included).
measure="loss" ranks moves by the loss alone, which is what COBLA's reference code
(chongli-uw/cobla DnnUtili.greedy_product_sum_heuristic) does. Nothing else is added (no local
search after the greedy).

The scores do not depend on the budgets, so every budget stops the same removal path, and each
step lowers both costs: a tighter budget stops later and never gives a larger N_C or N_M.

A problem with choice layers (schemes tucker2, auto) is solved by the greedy over each layer's explicit
choices, edgecomp.ranks.baselines.on_choices.select_choices_pos_greedy (same measures and weights).
"""

from __future__ import annotations

import heapq

import numpy as np

from edgecomp.ranks.baselines._common import cost_report, effective_log_energy, require_satisfiable
from edgecomp.ranks.baselines.on_choices import select_choices_pos_greedy
from edgecomp.ranks.choices import has_choice_layers
from edgecomp.ranks.problem import RankProblem, RankSelection

MEASURES = ("per_cost", "loss")


def _next_rank(b: int, r: int) -> int | None:
    if r >= b:
        return b - 1 if b >= 2 else None
    return r - 1 if r > 1 else None


def select_pos_greedy(problem: RankProblem, *, measure: str = "per_cost",
                      weights: tuple[float, float] = (1.0, 1.0)) -> RankSelection:
    if measure not in MEASURES:
        raise ValueError(f"pos-greedy: measure must be one of {MEASURES}, got {measure!r}")
    if has_choice_layers(problem):
        return select_choices_pos_greedy(problem, measure=measure, weights=weights)
    w_c, w_m = (float(w) for w in weights)
    if w_c < 0 or w_m < 0 or w_c + w_m <= 0:
        raise ValueError(f"pos-greedy: weights must be non-negative and not both zero, got {weights}")
    require_satisfiable(problem, "pos-greedy")
    layers = problem.layers
    log_e = [effective_log_energy(layer) for layer in layers]
    c0 = sum(layer.original_compute for layer in layers) or 1.0
    m0 = sum(layer.original_params for layer in layers) or 1.0
    extra = problem.extra
    x0 = [float(b.original.sum()) or 1.0 for b in extra]
    ranks = problem.max_ranks.copy()
    compute, params = problem.cost(ranks)

    def move(i: int) -> tuple[float, int, int, float, float] | None:
        layer, r = layers[i], int(ranks[i])
        nr = _next_rank(layer.break_even_rank, r)
        if nr is None:
            return None
        (c_old, p_old), (c_new, p_new) = layer.cost(r), layer.cost(nr)
        loss = max(float(log_e[i][r - 1] - log_e[i][nr - 1]), 0.0)
        saving = w_c * (c_old - c_new) / c0 + w_m * (p_old - p_new) / m0
        for b, scale in zip(extra, x0):
            saving += (b.layer_cost(i, layer, r) - b.layer_cost(i, layer, nr)) / scale
        score = loss if measure == "loss" else (loss / saving if saving > 0 else np.inf)
        return score, i, nr, c_old - c_new, p_old - p_new

    heap = [mv for mv in (move(i) for i in range(len(layers))) if mv is not None]
    heapq.heapify(heap)
    steps = 0

    def fits(c: float, p: float) -> bool:
        return c <= problem.compute_budget * (1 + 1e-12) and p <= problem.param_budget * (1 + 1e-12)

    # the running totals pre-screen; RankProblem.cost has the final word on feasibility
    while not (fits(compute, params) and problem.feasible(ranks)):
        if not heap:  # cannot happen after require_satisfiable, unless rounding
            compute, params = problem.cost(ranks)
            if problem.feasible(ranks):
                break
            raise RuntimeError("pos-greedy: ran out of moves before meeting the budgets")
        _, i, nr, dc, dp = heapq.heappop(heap)
        ranks[i] = nr
        compute -= dc
        params -= dp
        steps += 1
        nxt = move(i)
        if nxt is not None:
            heapq.heappush(heap, nxt)
    info = {"measure": measure, "weights": [w_c, w_m], "steps": steps}
    info.update(cost_report(problem, ranks))
    return RankSelection(method="pos-greedy", ranks=ranks, info=info)
