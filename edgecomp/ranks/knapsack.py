"""Exact rank selection as a multiple-choice knapsack MILP (shared by the LC C-step and pos-cvx).

Every layer i offers a list of candidate ranks k with a value v_ik and exact costs (compute_ik,
in MACs or ms: RankProblem.compute_unit; params_ik) from the break-even rule of
`edgecomp.ranks.problem`. Choosing one candidate per layer is the multiple-choice knapsack problem
with two knapsack rows, plus one per extra budget of the problem (`RankProblem.extra`, e.g. latency:
`CostRow`)

    max (or min)  sum_{i,k} v_ik x_ik
    s.t.          sum_k x_ik = 1                          for every layer i
                  sum_{i,k} compute_ik x_ik <= N_C,max - fixed_compute
                  sum_{i,k} params_ik  x_ik <= N_M,max - fixed_params
                  sum_{i,k} cost_l,ik  x_ik <= N_l,max - fixed_l        for every extra budget l
                  x_ik in {0, 1}

solved with `scipy.optimize.milp` (HiGHS branch and cut) after an LP relaxation whose duals fix
most candidates to 0 exactly (`_lp_fixing`); optimal within `mip_rel_gap`.

Candidates of a layer (`layer_candidates`): the factored ranks 1 .. b-1 (b = break-even rank) and,
when b <= K, the unfactored layer, reported as rank K (full rank). Ranks b .. K-1 need not be
listed: they all build the unfactored layer, which costs the original compute/params and keeps the
whole weight (energy 1, truncation error 0), exactly what candidate K stands for. A layer with
max rank ~1500 therefore contributes at most 1500 binaries. On a 53-layer ResNet-50-sized
synthetic problem (~10k candidates) the solve takes 0.3-5 s at the default gap 1e-6 (2 cores);
a few instances with many identically shaped layers need the `time_limit` (default 30 s), which
returns the best solution found (its gap, ~1e-5, is in the result).

The LC algorithm's C-step (Idelbayev & Carreira-Perpinan, "Low-rank compression of neural nets:
learning the rank of each layer", CVPR 2020) is `select_min_error`: minimize the squared
Frobenius error of truncating every layer, sum_i sum_{j > r_i} sigma_ij^2, under all budgets
(compute, params and any extra ones).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_array

from edgecomp.errors import EdgecompError, InfeasibleBudgetError
from edgecomp.ranks.problem import LayerSpectrum, RankProblem, RankSelection, infeasible_budget_error

# A chosen solution must satisfy the budgets exactly (RankProblem.feasible uses rtol 1e-12);
# HiGHS accepts rows violated by its feasibility tolerance (~1e-6 of the budget here), so a
# solution is re-checked in floating point and re-solved with tight tolerances and a lowered
# right-hand side when needed (tight tolerances from the start slow big solves down).
_MAX_TIGHTENINGS = 6
_EXACT_RTOL = 1e-13


@dataclass(frozen=True)
class LayerCandidates:
    """The ranks a layer can take in the MILP and their exact (break-even aware) costs."""

    ranks: np.ndarray
    compute: np.ndarray  # in the problem's compute_unit
    params: np.ndarray


def layer_candidates(layer: LayerSpectrum) -> LayerCandidates:
    """Factored ranks 1..b-1 plus, when b <= K, the unfactored layer as rank K."""
    b, k = layer.break_even_rank, layer.max_rank
    ranks = np.arange(1, min(b - 1, k) + 1, dtype=np.int64)
    if b <= k:
        ranks = np.append(ranks, k)
    costs = np.array([layer.cost(int(r)) for r in ranks], dtype=np.float64).reshape(-1, 2)
    return LayerCandidates(ranks=ranks, compute=costs[:, 0], params=costs[:, 1])


@dataclass(frozen=True)
class CostRow:
    """A further knapsack row: costs[g][k] of candidate k of group g, its budget, and how errors name it."""

    name: str
    unit: str
    costs: list
    budget: float


@dataclass
class KnapsackSolution:
    """Chosen candidate index per group plus solver diagnostics."""

    indices: np.ndarray
    objective: float
    # "optimal" (within the gaps), "trivial" (the best choice of every group fits), "time_limit" /
    # "node_limit" (best solution found when the limit hit)
    status: str
    mip_gap: float | None
    solve_time_s: float
    n_candidates: int
    n_free: int = 0  # candidates left after reduced-cost fixing
    lp_bound: float | None = None  # LP relaxation bound on the objective (original units)
    tightenings: int = 0


def _as_groups(values, compute, params) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    if not (len(values) == len(compute) == len(params)):
        raise ValueError("values, compute and params need one array per group")
    vs, ms, ps = [], [], []
    for g, (v, m, p) in enumerate(zip(values, compute, params)):
        v, m, p = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (v, m, p))
        if not (v.size == m.size == p.size) or v.size == 0:
            raise ValueError(f"group {g}: values/compute/params must be non-empty and of equal length")
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(m)) and np.all(np.isfinite(p))):
            raise ValueError(f"group {g}: values and costs must be finite")
        vs.append(v)
        ms.append(m)
        ps.append(p)
    return vs, ms, ps


def _fits(total: float, budget: float) -> bool:
    return total <= budget + _EXACT_RTOL * max(abs(budget), 1.0)


@contextlib.contextmanager
def _solver_stdout_to_stderr():
    """HiGHS 1.12 prints some MIP debug lines with C printf; keep them off stdout (JSON output)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no usable fd 1: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@dataclass
class _Model:
    """The MILP in solver form: minimize c.x, one-hot groups, normalized cost rows <= rhs."""

    c: np.ndarray
    group: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray  # (k, n), each cost row divided by max(|budget|, 1)
    rhs: np.ndarray  # (k,)
    caps: list  # (raw costs, raw budget) per row, for the exact feasibility check

    def a_eq(self, cols: np.ndarray) -> csr_array:
        return csr_array((np.ones(cols.size), (self.group[cols], np.arange(cols.size))),
                         shape=(self.offsets.size - 1, cols.size))

    def pick(self, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Chosen global column per group from a (near-)integral solution over `cols`."""
        best = np.full(self.offsets.size - 1, -1, dtype=np.int64)
        val = np.full(best.size, -np.inf)
        for j, xj in zip(cols, x):
            g = self.group[j]
            if xj > val[g]:
                best[g], val[g] = j, xj
        return best

    def violations(self, chosen: np.ndarray) -> list[float]:
        return [(costs[chosen].sum() - budget) / max(abs(budget), 1.0) for costs, budget in self.caps]


def _lp_fixing(model: _Model, time_limit: float | None) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Solve the LP relaxation; return (columns to keep, rounded-down incumbent, LP bound).

    Weak duality with the LP's row duals (y_eq, y_ub <= 0) and reduced costs d = c - A^T y gives,
    for every integer solution choosing k_g in group g,
        c.x >= LB + sum_g (d_{k_g} - min_{k in g} d_k),  LB = y_eq.1 + y_ub.rhs + sum_g min_{k in g} d_k.
    Given an incumbent of value z, a candidate with LB + d_k - min_g d > z is in no better solution
    and is dropped (exact). The incumbent rounds the LP solution down: in each group the support
    member with the smallest normalized cost (it costs no more than the LP's mixture in either row
    when the group's candidates are ordered by cost, as ranks are).
    """
    n = model.c.size
    all_cols = np.arange(n)
    opts = {"time_limit": time_limit} if time_limit is not None else {}
    lp = linprog(model.c, A_ub=model.rows, b_ub=model.rhs, A_eq=model.a_eq(all_cols),
                 b_eq=np.ones(model.offsets.size - 1), bounds=(0.0, 1.0), method="highs", options=opts)
    if lp.status == 2:
        return all_cols, None, np.inf  # LP infeasible -> the MILP is too
    if lp.status != 0 or lp.x is None:
        return all_cols, None, None
    y_eq = np.asarray(lp.eqlin.marginals)
    y_ub = np.minimum(np.asarray(lp.ineqlin.marginals), 0.0)
    d = model.c - y_eq[model.group] - model.rows.T @ y_ub
    d_min = np.minimum.reduceat(d, model.offsets[:-1])
    lb = float(y_eq.sum() + y_ub @ model.rhs + d_min.sum())
    norm_cost = model.rows.sum(axis=0)
    incumbent = np.empty(model.offsets.size - 1, dtype=np.int64)
    for g in range(incumbent.size):
        cols = np.arange(model.offsets[g], model.offsets[g + 1])
        support = cols[lp.x[cols] > 1e-9]
        if support.size == 0:
            support = cols
        incumbent[g] = support[np.lexsort((model.c[support], norm_cost[support]))[0]]
    if any(v > _EXACT_RTOL for v in model.violations(incumbent)):
        return all_cols, None, lb
    z_inc = float(model.c[incumbent].sum())
    keep = lb + (d - d_min[model.group]) <= z_inc + 1e-9 * max(1.0, abs(z_inc))
    keep[incumbent] = True
    return np.flatnonzero(keep), incumbent, lb


def solve_mcknapsack(
    values,
    compute,
    params,
    compute_budget: float,
    param_budget: float,
    maximize: bool = True,
    *,
    time_limit: float | None = 30.0,
    mip_rel_gap: float = 1e-6,
    node_limit: int | None = None,
    compute_unit: str = "MACs",
    extra: tuple[CostRow, ...] | list[CostRow] = (),
) -> KnapsackSolution:
    """Solve the multiple-choice knapsack with a compute row, a parameter row and the `extra` rows.

    values/compute/params: one array per group (layer), one entry per candidate; compute and
    compute_budget in `compute_unit` (which only words the errors). Budgets may be +inf (row
    dropped). Objective values are rescaled to max |v| = 1 and cost rows to their budgets.

    Method: LP relaxation, exact reduced-cost fixing against a rounded-down incumbent
    (`_lp_fixing`), then HiGHS branch and cut on the remaining candidates. The answer is optimal
    within `mip_rel_gap` (relative to the objective, and as an absolute gap relative to the largest
    |value|; pass 0 for a proven optimum, which can take long on big networks with many identically
    shaped layers, where near-ties abound).
    `time_limit` (s, per solver call) / `node_limit` return the best solution found when hit
    (status "time_limit" / "node_limit", at worst the rounded LP incumbent); info carries the gap.

    Raises InfeasibleBudgetError when no choice fits (its min_macs / min_params are the smallest
    reachable totals of each row taken separately; min_macs is in `compute_unit`; the message names the
    rows whose cheapest total is over budget, extra rows included).
    """
    t0 = time.perf_counter()
    vs, ms, ps = _as_groups(values, compute, params)
    n_groups = len(vs)
    n = int(sum(v.size for v in vs))
    extra = tuple(extra)
    labels = [("MAC" if compute_unit == "MACs" else "compute", compute_unit), ("parameter", "parameters")]
    row_costs, budgets = [ms, ps], [float(compute_budget), float(param_budget)]
    for row in extra:
        costs = [np.asarray(c, dtype=np.float64).reshape(-1) for c in row.costs]
        if len(costs) != n_groups or any(c.size != v.size or not np.all(np.isfinite(c)) for c, v in zip(costs, vs)):
            raise ValueError(f"row {row.name}: needs finite costs, one per candidate of every group")
        labels.append((row.name, row.unit))
        row_costs.append(costs)
        budgets.append(float(row.budget))
    minimums = [float(sum(c.min() for c in cs)) for cs in row_costs]

    def infeasible(detail: str) -> InfeasibleBudgetError:
        over = [k for k in range(len(budgets)) if not _fits(minimums[k], budgets[k])]
        extra_text = "".join(f", {minimums[k]:.6g} {labels[k][1]} {labels[k][0]}" for k in range(2, len(labels)))
        budget_text = "".join(f", {budgets[k]:.6g} {labels[k][1]} {labels[k][0]}" for k in range(2, len(labels)))
        binding = "; ".join(f"{labels[k][0]} budget {budgets[k]:.6g} {labels[k][1]} < minimum achievable "
                            f"{minimums[k]:.6g} {labels[k][1]}" for k in over)
        error = InfeasibleBudgetError(
            f"budget infeasible: {detail}; budgets are {compute_budget:.6g} {compute_unit} and {param_budget:.6g} "
            f"parameters{budget_text} (cheapest per row: {minimums[0]:.6g} {compute_unit}, {minimums[1]:.6g} "
            f"parameters{extra_text})" + (f" (over: {binding})" if extra and over else ""),
            min_macs=minimums[0],
            min_params=minimums[1],
        )
        error.minimums = {label: v for (label, _), v in zip(labels, minimums)}
        error.binding = [labels[k][0] for k in over]
        return error

    if not all(_fits(m, b) for m, b in zip(minimums, budgets)):
        raise infeasible("even the cheapest choice in every group does not fit")
    if n_groups == 0:
        return KnapsackSolution(np.zeros(0, np.int64), 0.0, "trivial", 0.0, 0.0, 0)

    sign = 1.0 if maximize else -1.0
    # The unconstrained best choice (ties -> cheapest in compute, then params) often already fits.
    best = np.array([np.lexsort((p, m, -sign * v))[0] for v, m, p in zip(vs, ms, ps)], dtype=np.int64)
    if all(_fits(sum(c[k] for c, k in zip(cs, best)), b) for cs, b in zip(row_costs, budgets)):
        obj = float(sum(v[k] for v, k in zip(vs, best)))
        return KnapsackSolution(best, obj, "trivial", 0.0, time.perf_counter() - t0, n, 0, obj)

    v_all = np.concatenate(vs)
    scale = float(np.max(np.abs(v_all))) or 1.0
    offsets = np.concatenate([[0], np.cumsum([v.size for v in vs])]).astype(np.int64)
    rows, rhs, caps = [], [], []
    for costs, budget in zip((np.concatenate(cs) for cs in row_costs), budgets):
        if np.isfinite(budget):
            norm = max(abs(budget), 1.0)
            rows.append(costs / norm)
            rhs.append(budget / norm)
            caps.append((costs, budget))
    model = _Model(c=-sign * v_all / scale, group=np.repeat(np.arange(n_groups), np.diff(offsets)),
                   offsets=offsets, rows=np.array(rows).reshape(len(rows), n), rhs=np.array(rhs), caps=caps)

    with _solver_stdout_to_stderr():
        cols, incumbent, lb = _lp_fixing(model, time_limit)
    if lb == np.inf:
        raise infeasible("no combination of candidates fits all budgets")
    lp_bound = None if lb is None else float(-sign * lb * scale)

    # mip_abs_gap (passed to HiGHS verbatim) is in units of the largest |value|: with
    # mip_rel_gap = 0 the search is exhaustive instead of stopping at HiGHS's default 1e-6.
    options = {"presolve": True, "mip_rel_gap": float(mip_rel_gap), "mip_abs_gap": float(mip_rel_gap),
               "disp": False}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    if node_limit is not None:
        options["node_limit"] = int(node_limit)
    sub_rows = model.rows[:, cols]
    rhs_now = model.rhs.copy()
    for tightening in range(_MAX_TIGHTENINGS + 1):
        constraints = [LinearConstraint(model.a_eq(cols), 1.0, 1.0)]
        if sub_rows.shape[0]:
            constraints.append(LinearConstraint(sub_rows, -np.inf, rhs_now))
        with warnings.catch_warnings(), _solver_stdout_to_stderr():
            warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
            res = milp(model.c[cols], integrality=np.ones(cols.size), bounds=Bounds(0.0, 1.0),
                       constraints=constraints, options=options)
        if res.x is None:
            if res.status == 2:
                raise infeasible("no combination of candidates fits all budgets")
            if incumbent is None:
                raise EdgecompError(f"knapsack MILP found no solution: {res.message} "
                                    f"(raise time_limit={time_limit} / node_limit={node_limit})")
            chosen, status = incumbent, "time_limit" if res.status == 1 else f"status_{res.status}"
        else:
            chosen = model.pick(res.x, cols)
            status = "optimal" if res.status == 0 else (
                "node_limit" if "node" in str(res.message).lower() else "time_limit")
        violations = model.violations(chosen)
        if all(viol <= _EXACT_RTOL for viol in violations):
            if incumbent is not None and model.c[incumbent].sum() < model.c[chosen].sum():
                chosen = incumbent  # a limit stopped the MILP before it beat the rounded LP
            idx = chosen - offsets[:-1]
            obj = float(sum(v[k] for v, k in zip(vs, idx)))
            z = float(model.c[chosen].sum())
            # relative distance to the LP bound: an upper bound on the true optimality gap
            gap = None if lb is None else max(z - lb, 0.0) / max(abs(z), 1e-12)
            if status == "optimal" and res.x is not None:
                gap = min(gap if gap is not None else np.inf, float(mip_rel_gap))
            return KnapsackSolution(idx, obj, status, gap, time.perf_counter() - t0, n, int(cols.size),
                                    lp_bound, tightening)
        # The solver's feasibility tolerance let a row slip over the budget: re-solve with tight
        # tolerances and that row's right-hand side lowered (by more each time).
        options.update(mip_feasibility_tolerance=1e-10, primal_feasibility_tolerance=1e-10)
        rhs_now = rhs_now - np.array([2.0 * max(viol, 0.0) + (1e-12 * 10**tightening if viol > 0 else 0.0)
                                      for viol in violations])
    raise EdgecompError("knapsack MILP kept returning solutions that exceed the budget by rounding; "
                        "the budget is too close to a cost boundary for the solver's tolerances")


def mcknapsack(values: list[np.ndarray], compute: list[np.ndarray], params: list[np.ndarray], compute_budget: float,
               param_budget: float, maximize: bool = True, **options) -> np.ndarray:
    """Chosen candidate index per group (see `solve_mcknapsack` for options and errors)."""
    return solve_mcknapsack(values, compute, params, compute_budget, param_budget, maximize, **options).indices


def extra_rows(problem: RankProblem, candidates: list[LayerCandidates]) -> list[CostRow]:
    """The knapsack rows of `problem`'s extra budgets over the candidate ranks (budgets net of fixed costs)."""
    return [CostRow(b.name, b.unit,
                    [np.array([b.layer_cost(i, layer, int(r)) for r in c.ranks]) for i, (layer, c) in
                     enumerate(zip(problem.layers, candidates))], b.budget - b.fixed) for b in problem.extra]


def solve_layers(problem: RankProblem, values: list[np.ndarray], candidates: list[LayerCandidates],
                 maximize: bool, **options) -> tuple[np.ndarray, KnapsackSolution]:
    """Run the knapsack over `problem`'s layers, every budget of it included (extra ones too); returns
    (ranks, solution). Budgets net of fixed costs."""
    sol = solve_mcknapsack(
        values,
        [c.compute for c in candidates],
        [c.params for c in candidates],
        problem.compute_budget - problem.fixed_compute,
        problem.param_budget - problem.fixed_params,
        maximize,
        compute_unit=problem.compute_unit,
        extra=extra_rows(problem, candidates),
        **options,
    )
    ranks = np.array([c.ranks[k] for c, k in zip(candidates, sol.indices)], dtype=np.int64)
    return ranks, sol


def solver_info(sol: KnapsackSolution) -> dict:
    """The solver diagnostics every MILP-based selector puts in RankSelection.info."""
    return {"solver_status": sol.status, "mip_gap": sol.mip_gap, "lp_bound": sol.lp_bound,
            "solve_time_s": sol.solve_time_s, "n_candidates": sol.n_candidates, "n_free_candidates": sol.n_free}


def infeasible_error(problem: RankProblem, method: str) -> InfeasibleBudgetError:
    """The error every budgeted selector raises when even rank 1 everywhere does not fit."""
    return infeasible_budget_error(
        problem, f"{method}: budget infeasible: the smallest model this scheme can build (rank 1 in every layer)")


def extra_cost_info(problem: RankProblem, ranks) -> dict:
    """{"extra_costs": {name: cost}, "extra_budgets": {name: budget}, "extra_units": {name: unit}} of the
    problem's extra budgets for RankSelection.info; {} without any."""
    if not problem.extra:
        return {}
    values = problem.extra_cost(ranks)
    return {"extra_costs": {b.name: float(v) for b, v in zip(problem.extra, values)},
            "extra_budgets": {b.name: b.budget for b in problem.extra},
            "extra_units": {b.name: b.unit for b in problem.extra}}


def truncation_errors(sigma: np.ndarray, ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """sum_{j > r} sigma_j^2 for each r in `ranks` (0 for r == max_rank, i.e. the unfactored layer)."""
    s2 = np.sort(np.asarray(sigma, dtype=np.float64))[::-1] ** 2
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tail[r] = sum_{j >= r} s2[j]
    return np.where(ranks >= max_rank, 0.0, tail[np.minimum(ranks, s2.size)])


def select_min_error(problem: RankProblem, sigma_override: list[np.ndarray] | None = None, *,
                     time_limit: float | None = 30.0, mip_rel_gap: float = 1e-6,
                     node_limit: int | None = None) -> RankSelection:
    """LC C-step: ranks minimizing sum_i ||W_i - W_i,r_i||_F^2 = sum_i sum_{j > r_i} sigma_ij^2
    subject to N_C(r) <= N_C,max, N_M(r) <= N_M,max and the problem's extra budgets (exact MILP;
    unfactored layers: error 0).

    sigma_override: the spectra of the current weights (one array per layer, each of the layer's
    max rank), used instead of `problem.layers[i].sigma`.
    """
    if not problem.is_satisfiable():
        raise infeasible_error(problem, "min-error")
    spectra = [layer.sigma for layer in problem.layers]
    if sigma_override is not None:
        if len(sigma_override) != len(problem.layers):
            raise ValueError(f"sigma_override has {len(sigma_override)} spectra for {len(problem.layers)} layers")
        spectra = []
        for layer, s in zip(problem.layers, sigma_override):
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            if s.size != layer.max_rank or not np.all(np.isfinite(s)):
                raise ValueError(f"layer {layer.name}: override spectrum needs {layer.max_rank} finite values, "
                                 f"got {s.size}")
            spectra.append(s)
    candidates = [layer_candidates(layer) for layer in problem.layers]
    errors = [truncation_errors(s, c.ranks, layer.max_rank)
              for s, c, layer in zip(spectra, candidates, problem.layers)]
    ranks, sol = solve_layers(problem, errors, candidates, maximize=False,
                              time_limit=time_limit, mip_rel_gap=mip_rel_gap, node_limit=node_limit)
    total = float(sum(float(np.sum(np.asarray(s) ** 2)) for s in spectra))
    compute, params = problem.cost(ranks)
    return RankSelection(
        method="min-error",
        ranks=ranks,
        info={
            "squared_error": sol.objective,
            "relative_squared_error": sol.objective / total if total > 0 else 0.0,
            "macs": compute,  # report.json's key (and lc.cstep's): in "compute_unit", MACs or ms
            "compute_unit": problem.compute_unit,
            "params": params,
            **extra_cost_info(problem, ranks),
            **solver_info(sol),
        },
    )

# Layers with explicit choices (schemes tucker2 and auto) live in edgecomp.ranks.choices, which builds on
# the solver above.
