"""The budgeted baselines on problems with choice layers (schemes tucker2 and auto: edgecomp.ranks.choices).

Every layer, ChoiceLayer or SVD layer, is read as its options (`layer_options`): exact (compute, params),
relative squared error e = ||W - W_hat||_F^2 / ||W||_F^2 and kept energy E = 1 - e, the unfactored layer
last. Where a heuristic needs one cost per option it uses the normalised cost

    s = w_C compute / C_0 + w_M params / M_0          (`normalised_costs`; (w_C, w_M) = (1, 1) by default)

with C_0 / M_0 the original compute / params of the decomposable layers together: the same scale for the
whole network, as the budgets are. Each selector returns ranks with `problem.feasible(ranks)` and raises
InfeasibleBudgetError when every layer at its cheapest choice does not fit.

Threshold methods (cptv, uniform) pick, for one parameter t shared by all layers, one option per layer;
with two costs an option's costs need not be monotone in t, so instead of bisecting, every breakpoint
(the t at which some layer's pick changes) is evaluated, vectorised, from the best t down, and the first
whose model meets both budgets is returned: the exact largest feasible t.
"""

from __future__ import annotations

import heapq

import numpy as np

from edgecomp.ranks.baselines._common import require_satisfiable
from edgecomp.ranks.choices import LayerOptions, choice_report, normalised_costs, problem_options
from edgecomp.ranks.problem import RankProblem, RankSelection

MEASURES = ("per_cost", "loss")
_CHUNK = 2048  # breakpoints evaluated at once


def _check_weights(weights) -> tuple[float, float]:
    w_c, w_m = (float(w) for w in weights)
    if w_c < 0 or w_m < 0 or w_c + w_m <= 0:
        raise ValueError(f"weights must be non-negative and not both zero, got {weights}")
    return w_c, w_m


def descent_path(s: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Option indices of a layer's greedy path, most expensive first: the 2-D Pareto frontier of
    (s, error), by decreasing s (so by increasing error). Ties in s keep the lower error, then the lower index."""
    order = np.lexsort((np.arange(s.size), errors, s))
    e = errors[order]
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(e)[:-1]])
    return order[e < best_before][::-1]


def select_choices_pos_greedy(problem: RankProblem, *, measure: str = "per_cost",
                              weights: tuple[float, float] = (1.0, 1.0)) -> RankSelection:
    """pos-greedy on choice layers, exactly:

    1. Every layer starts at its last option (the dense layer; an SVD layer's full rank).
    2. Let B be the budgets the current model exceeds. The normalised cost counts only those:
       s = sum_{b in B} w_b cost_b / cost_b,0 (compute: w_C, C_0; params: w_M, M_0; `normalised_costs`).
       A layer's path is the 2-D Pareto frontier of (s, e) of its options by decreasing s (`descent_path`:
       s strictly decreases and e increases along it). Its candidates are the path entries with a smaller s
       than its current option's after which every budget not in B still holds (model totals); when there is
       none, its first option (the cheapest in both costs, so it always keeps them) if that has a smaller s.
    3. The layer's move goes to the candidate with the least error increase per unit of removed normalised
       cost, (e_new - e_old) / (s_old - s_new) (ties: the nearest), which is its score: on a convex path the
       next entry, past a stretch where the error climbs faster than the cost falls (a Tucker-2 pair near full
       rank costs almost the dense layer) the vertex of the lower convex hull beyond it, as in the greedy for
       the multiple-choice knapsack. measure="loss": the next candidate, scored by e_new - e_old alone.
    4. Apply the move with the smallest score (ties: lowest layer index); whenever B changes (a budget
       becomes met; no move breaks a met one), recompute s and the paths. Repeat until both budgets hold.
    Counting only the exceeded budgets keeps a met budget from steering the greedy (a layer with many MACs
    but few parameters is not cut for its MACs when only the parameters are over budget). While some budget
    is met, every move is rescored after each step (whether it keeps that budget depends on the totals), so
    the smallest score is exact. Each move strictly lowers one layer's s under a fixed B, and B only shrinks,
    so the greedy ends, within the budgets whenever every layer at its cheapest choice is (a layer without a
    move is at its least s, so B's costs are then at their minimum). On an SVD layer the path is its ranks in
    order, as in select_pos_greedy, but scored on relative squared errors instead of log energies (the errors
    all choice-based methods compare).
    """
    if measure not in MEASURES:
        raise ValueError(f"pos-greedy: measure must be one of {MEASURES}, got {measure!r}")
    weights = _check_weights(weights)
    require_satisfiable(problem, "pos-greedy")
    options = problem_options(problem)
    budgets = np.array([problem.compute_budget, problem.param_budget]) * (1 + 1e-12)
    current = [o.ids.size - 1 for o in options]  # option index per layer
    totals = np.array(problem.cost([o.ids[k] for o, k in zip(options, current)]))
    steps, phases = 0, 0

    def ranks_now() -> np.ndarray:
        return np.array([o.ids[k] for o, k in zip(options, current)], dtype=np.int64)

    while True:
        over = totals > budgets
        if not over.any():
            if problem.feasible(ranks_now()):
                break
            totals = np.array(problem.cost(ranks_now()))  # the running totals rounded below a budget
            continue
        phases += 1
        costs = normalised_costs(problem, options, tuple(w * o for w, o in zip(weights, over)))
        paths = [descent_path(c, o.errors) for c, o in zip(costs, options)]

        def move(i: int, over=over, costs=costs, paths=paths):
            s, o, path, here = costs[i], options[i], paths[i], current[i]
            after = totals[:, None] + np.stack([o.compute[path] - o.compute[here], o.params[path] - o.params[here]])
            keeps = ~np.any(~over[:, None] & (after > budgets[:, None]), axis=0)
            cand = path[(s[path] < s[here]) & keeps]
            if cand.size == 0:
                if s[0] >= s[here]:
                    return None
                cand = np.array([0])
            loss = np.maximum(o.errors[cand] - o.errors[here], 0.0)
            score = loss if measure == "loss" else loss / (s[here] - s[cand])
            k = 0 if measure == "loss" else int(np.argmin(score))  # argmin: the first, i.e. nearest, of ties
            return float(score[k]), i, int(cand[k])

        heap = [mv for mv in (move(i) for i in range(len(options))) if mv is not None]
        heapq.heapify(heap)
        while True:
            if not over.all():  # a met budget: every move's admissibility depends on the totals
                heap = [mv for mv in (move(i) for i in range(len(options))) if mv is not None]
                heapq.heapify(heap)
            if not heap:  # cannot happen after require_satisfiable (see the docstring)
                raise RuntimeError("pos-greedy: ran out of moves before meeting the budgets")
            _, i, nxt = heapq.heappop(heap)
            o = options[i]
            totals += np.array([o.compute[nxt] - o.compute[current[i]], o.params[nxt] - o.params[current[i]]])
            current[i] = nxt
            steps += 1
            if not np.array_equal(totals > budgets, over):
                break
            again = move(i)
            if again is not None:
                heapq.heappush(heap, again)
    ranks = ranks_now()
    info = {"measure": measure, "weights": list(weights), "steps": steps, "phases": phases}
    info.update(choice_report(problem, ranks, options))
    return RankSelection(method="pos-greedy", ranks=ranks, info=info)


def threshold_picks(key: np.ndarray, pref: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold t, the index of the option with the smallest `pref` among those with key <= t (ties:
    the smaller key, then the lower index); where no option has key <= t, the option with the smallest key."""
    order = np.lexsort((np.arange(key.size), pref, key))
    p = pref[order]
    improved = np.concatenate([[True], p[1:] < np.minimum.accumulate(p)[:-1]])
    best = np.maximum.accumulate(np.where(improved, np.arange(p.size), 0))  # prefix argmin, first occurrence
    count = np.searchsorted(key[order], thresholds, side="right")
    return order[best[np.maximum(count - 1, 0)]]


def _largest_feasible(problem: RankProblem, options: list[LayerOptions], keys: list[np.ndarray],
                      prefs: list[np.ndarray], thresholds: np.ndarray) -> tuple[float, np.ndarray, int]:
    """The first threshold of `thresholds` (ordered best first) whose picks meet both budgets, its ranks and
    how many thresholds were evaluated. The running totals screen; RankProblem.feasible decides."""
    rtol = 1e-12
    for start in range(0, thresholds.size, _CHUNK):
        chunk = thresholds[start:start + _CHUNK]
        picks = [threshold_picks(k, p, chunk) for k, p in zip(keys, prefs)]
        compute = problem.fixed_compute + sum(o.compute[k] for o, k in zip(options, picks))
        params = problem.fixed_params + sum(o.params[k] for o, k in zip(options, picks))
        fits = ((compute <= problem.compute_budget * (1 + rtol)) & (params <= problem.param_budget * (1 + rtol)))
        for j in np.flatnonzero(fits):
            ranks = np.array([o.ids[k[j]] for o, k in zip(options, picks)], dtype=np.int64)
            if problem.feasible(ranks):
                return float(chunk[j]), ranks, start + int(j) + 1
    raise RuntimeError("no threshold meets the budgets although the cheapest choices do")


def select_choices_cptv(problem: RankProblem, *, weights: tuple[float, float] = (1.0, 1.0)) -> RankSelection:
    """CPTV on choice layers: one kept-energy threshold t for all layers; each layer takes its cheapest
    option (least s; ties: more energy) among those keeping at least t of its energy,

        k_i(t) = argmin { s_ik : E_ik = 1 - e_ik >= t },

    and t is the largest value whose model meets both budgets (every option's energy is a breakpoint; all
    are tried from the top, so the answer is exact although costs need not be monotone in t). The last
    option keeps all the energy, so every layer has an option at every t <= 1; at the smallest breakpoint
    every layer takes its least-s option, its cheapest choice, which fits when anything does."""
    weights = _check_weights(weights)
    require_satisfiable(problem, "cptv")
    options = problem_options(problem)
    costs = normalised_costs(problem, options, weights)
    keys = [-o.energy for o in options]  # E >= t  <=>  -E <= -t
    thresholds = np.unique(np.concatenate(keys))  # ascending -t: the largest t first
    t, ranks, evals = _largest_feasible(problem, options, keys, costs, thresholds)
    info = {"beta": -t, "weights": list(weights), "n_breakpoints": int(thresholds.size), "cost_evaluations": evals}
    info.update(choice_report(problem, ranks, options))
    return RankSelection(method="cptv", ranks=ranks, info=info)


def select_choices_uniform_cost(problem: RankProblem) -> RankSelection:
    """Uniform on choice layers with mixed schemes (scheme auto), where no kept fraction of one rank applies:
    the same cost fraction t of the dense layer in every layer. Layer i takes its least-error option (ties:
    the cheaper one) among those costing at most t times the dense layer in both costs,

        k_i(t) = argmin { e_ik : compute_ik <= t compute_i,dense  and  params_ik <= t params_i,dense },

    or its cheapest option when none does; t is the largest value whose model meets both budgets (every
    option's need max(compute / compute_dense, params / params_dense) is a breakpoint; all are tried from
    the top). An SVD layer's options are its ranks, so it takes the largest rank within t of its dense cost."""
    require_satisfiable(problem, "uniform")
    options = problem_options(problem)
    dense = [(layer.original_compute or 1.0, layer.original_params or 1.0) for layer in problem.layers]
    keys = [np.maximum(o.compute / c, o.params / p) for o, (c, p) in zip(options, dense)]
    thresholds = np.unique(np.concatenate(keys))[::-1]
    t, ranks, evals = _largest_feasible(problem, options, keys, [o.errors for o in options], thresholds)
    info = {"alpha": t, "definition": "least-error choice costing at most alpha x the dense layer in both costs",
            "n_breakpoints": int(thresholds.size), "cost_evaluations": evals}
    info.update(choice_report(problem, ranks, options))
    return RankSelection(method="uniform", ranks=ranks, info=info)
