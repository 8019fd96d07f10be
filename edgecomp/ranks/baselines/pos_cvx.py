"""Product-of-sums (PoS) rank selection solved exactly (COBLA's "PoS (CVX)" baseline).

    max  sum_i log E_i(r_i)   s.t.  N_C(r) <= N_C,max,  N_M(r) <= N_M,max  (and every extra budget)

(Zhang et al. TPAMI 2016 eq. 13-14 in logs; E_i as in `pos_greedy`). COBLA's reference code
(chongli-uw/cobla cvx_sumlog_wrapper.m) solves it with CVX + MOSEK over 0/1 masks with the linear
per-rank costs; here it is the multiple-choice knapsack MILP of `edgecomp.ranks.knapsack`
(binary x_ir, one rank per layer, objective sum x_ir log E_i(r)) over the break-even-exact
candidates, solved with HiGHS after exact LP reduced-cost fixing. The optimum is exact up to
`mip_rel_gap` (default 1e-6 of the objective; 0 proves optimality); `time_limit` (s) / `node_limit`
return the best solution found (info["solver_status"], info["mip_gap"] say how good).

Note: an exact optimizer is not monotone in each cost separately: tightening the parameter budget
can move the optimum to a point with a higher compute cost. Its objective is monotone (tighter never better).

A problem with choice layers (schemes tucker2, auto) is the same knapsack over each layer's explicit choices,
minimizing the sum of relative squared errors (edgecomp.ranks.choices.select_choices_min_error).
"""

from __future__ import annotations

from edgecomp.ranks.baselines._common import cost_report, effective_log_energy, require_satisfiable
from edgecomp.ranks.knapsack import layer_candidates, solve_layers, solver_info
from edgecomp.ranks.choices import has_choice_layers, select_choices_min_error
from edgecomp.ranks.problem import RankProblem, RankSelection


def select_pos_cvx(problem: RankProblem, *, time_limit: float | None = 30.0, mip_rel_gap: float = 1e-6,
                   node_limit: int | None = None) -> RankSelection:
    require_satisfiable(problem, "pos-cvx")
    if has_choice_layers(problem):
        return select_choices_min_error(problem, method="pos-cvx", time_limit=time_limit, mip_rel_gap=mip_rel_gap)
    candidates = [layer_candidates(layer) for layer in problem.layers]
    values = [effective_log_energy(layer)[c.ranks - 1] for layer, c in zip(problem.layers, candidates)]
    ranks, sol = solve_layers(problem, values, candidates, maximize=True,
                              time_limit=time_limit, mip_rel_gap=mip_rel_gap, node_limit=node_limit)
    info = {"objective": sol.objective, **solver_info(sol)}
    info.update(cost_report(problem, ranks))
    return RankSelection(method="pos-cvx", ranks=ranks, info=info)
