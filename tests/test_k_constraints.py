"""k linear budgets (compute, params and e.g. latency): projection, knapsack, SQP, baselines, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from edgecomp.errors import InfeasibleBudgetError
from edgecomp.ranks.baselines import BASELINES
from edgecomp.ranks.cobla import SQPOptions, round_ranks, solve_relaxed
from edgecomp.ranks.cobla.projection import BudgetPolytope, LinearPolytope, polytope
from edgecomp.ranks.knapsack import CostRow, select_min_error, solve_mcknapsack
from edgecomp.ranks.latency import (NOT_FASTER, latency_break_even_rank, latency_problem, predicted_latency_ms,
                                    with_latency_budget)
from edgecomp.ranks.problem import LayerSpectrum, LinearBudget, RankProblem


# ---- projection ----------------------------------------------------------------------------
def assert_kkt(P, z, x):
    """x = clip(z - A'mu, 0, 1), mu >= 0, A x <= b, mu_k (A x - b)_k = 0: the exact projection."""
    mu = P.mu
    scale = P.A.sum(axis=1) + np.abs(P.b) + 1.0
    r = P.A @ x - P.b
    assert np.all(mu >= 0)
    np.testing.assert_allclose(x, np.clip(z - mu @ P.A, 0.0, 1.0), atol=1e-12)
    assert np.all(r <= 1e-9 * scale)
    assert np.all(np.where(mu > 0, np.abs(r) <= 1e-9 * scale, True))


def random_rows(rng, k, n, degenerate=""):
    """Rows constant within 'layers' (as mask costs are), or dense; optionally a duplicate or a zero row."""
    n_layers = int(rng.integers(1, 4))
    A = rng.uniform(0.5, 5.0, (k, n_layers))[:, rng.integers(0, n_layers, n)]
    if "dense" in degenerate:
        A = rng.uniform(0.0, 5.0, (k, n))
    if "dup" in degenerate and k >= 2:
        A[1] = A[0]
    if "zero" in degenerate and k >= 2:
        A[-1] = 0.0
    b = A @ rng.random(n) * rng.uniform(0.0, 1.2, k)
    return A, b


def slsqp_projection(A, b, z):
    cons = [{"type": "ineq", "fun": lambda v: b - A @ v, "jac": lambda v: -A}]
    res = minimize(lambda v: 0.5 * float((v - z) @ (v - z)), np.zeros(z.size), jac=lambda v: v - z,
                   bounds=[(0.0, 1.0)] * z.size, constraints=cons, method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 500})
    return res.x


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("degenerate", ["", "dense", "dup", "zero", "dup+zero"])
def test_projection_is_exact_against_slsqp_and_the_nested_fallback(k, degenerate):
    rng = np.random.default_rng([k, len(degenerate)])
    for _ in range(6):
        n = int(rng.integers(2, 14))
        A, b = random_rows(rng, k, n, degenerate)
        P = LinearPolytope(A, b)
        for _ in range(3):
            z = rng.normal(0.5, 1.0, n) * 2
            x = P.project(z)
            assert_kkt(P, z, x)
            np.testing.assert_allclose(x, slsqp_projection(A, b, z), atol=2e-6)
            x_nested = np.clip(z - P._nested(z) @ A, 0.0, 1.0)  # the fallback on its own
            np.testing.assert_allclose(x_nested, x, atol=1e-9)


def test_projection_kkt_at_scale_with_warm_starts():
    rng = np.random.default_rng(3)
    n, k = 3000, 4
    A = rng.uniform(0.5, 5.0, (k, 40))[:, rng.integers(0, 40, n)]
    P = LinearPolytope(A, A @ rng.random(n) * 0.4)
    z = rng.normal(0.5, 1.0, n)
    for _ in range(5):
        z = z + 0.05 * rng.normal(size=n)
        assert_kkt(P, z, P.project(z))
    assert np.count_nonzero(P.mu) >= 2  # several rows bind at once


def test_two_rows_agree_with_the_fast_two_row_polytope():
    rng = np.random.default_rng(5)
    for _ in range(40):
        n = int(rng.integers(1, 30))
        A, b = random_rows(rng, 2, n, "dup" if rng.random() < 0.3 else "")
        fast, general = BudgetPolytope(A[0], A[1], b[0], b[1]), LinearPolytope(A, b)
        assert isinstance(polytope(A, b), BudgetPolytope)
        z = rng.normal(0.5, 1.0, n) * 2
        np.testing.assert_allclose(general.project(z), fast.project(z), atol=1e-9)


def test_an_infeasible_polytope_is_empty_and_refuses_to_project():
    P = LinearPolytope(np.ones((3, 4)), np.array([1.0, -0.5, 2.0]))
    assert P.is_empty
    with pytest.raises(ValueError, match="empty"):
        P.project(np.zeros(4))
    with pytest.raises(ValueError, match="non-negative"):
        LinearPolytope(-np.ones((1, 2)), np.ones(1))
    assert not LinearPolytope(np.zeros((2, 3)), np.zeros(2)).is_empty  # zero rows with zero budgets


# ---- problems with a latency budget ---------------------------------------------------------------
def layer(name, k, compute, params, rng):
    sigma = np.sort(rng.exponential(1.0, k))[::-1]
    return LayerSpectrum(name, sigma, compute, params, original_compute=compute * k * 1.3,
                         original_params=params * k * 1.6)


def latency_of(n_layers, per_rank, intercept, original, budget, fixed=0.5, ratio=1.0):
    return LinearBudget("latency", "ms", np.array(per_rank[:n_layers], dtype=float),
                        np.array(intercept[:n_layers], dtype=float), np.array(original[:n_layers], dtype=float),
                        budget, fixed=fixed, break_even_ratio=ratio)


def tiny_problem(rng, fractions=(0.6, 0.6, 0.6)):
    layers = [layer(f"l{i}", int(rng.integers(2, 5)), float(rng.uniform(5, 20)), float(rng.uniform(1, 5)), rng)
              for i in range(3)]
    per_rank = rng.uniform(0.05, 0.3, 3)
    original = np.array([pr * l.max_rank for pr, l in zip(per_rank, layers)]) * rng.uniform(0.6, 1.4, 3)
    lat = latency_of(3, per_rank, rng.uniform(0.0, 0.1, 3), original, np.inf)
    p = RankProblem(layers, np.inf, np.inf, fixed_compute=3.0, fixed_params=2.0, extra=(lat,))
    lo, hi = p.min_costs, p.costs(p.max_ranks)
    budgets = lo + np.asarray(fractions) * (hi - lo)
    return p.with_budgets(budgets[0], budgets[1], [budgets[2]])


def brute_force(problem, value):
    best, best_ranks = -np.inf, None
    for ranks in itertools.product(*(range(1, l.max_rank + 1) for l in problem.layers)):
        if problem.feasible(ranks):
            v = value(np.array(ranks))
            if v > best + 1e-12:
                best, best_ranks = v, np.array(ranks)
    return best, best_ranks


def min_error_value(problem):
    def value(ranks):
        return -sum(0.0 if r >= l.break_even_rank else float(np.sum(l.sigma[r:] ** 2))
                    for l, r in zip(problem.layers, ranks))
    return value


def test_knapsack_with_three_budgets_matches_brute_force():
    rng = np.random.default_rng(11)
    latency_bound = 0
    for _ in range(25):
        p = tiny_problem(rng, rng.uniform(0.2, 0.9, 3))
        if not p.is_satisfiable():
            continue
        sel = select_min_error(p, mip_rel_gap=0.0)
        best, ranks = brute_force(p, min_error_value(p))
        assert p.feasible(sel.ranks)
        assert -sel.info["squared_error"] == pytest.approx(best, abs=1e-9)
        assert sel.info["extra_costs"]["latency"] == pytest.approx(p.extra_cost(sel.ranks)[0])
        # the latency row matters: without it the optimum is cheaper in error and (here) over the latency budget
        free = RankProblem(p.layers, p.compute_budget, p.param_budget, p.fixed_compute, p.fixed_params)
        latency_bound += not p.feasible(select_min_error(free, mip_rel_gap=0.0).ranks)
    assert latency_bound >= 3


def test_knapsack_rows_report_the_binding_budget_and_its_minimum():
    values = [np.array([0.0, 1.0]), np.array([0.0, 2.0])]
    costs = [np.array([1.0, 2.0]), np.array([1.0, 3.0])]
    lat = CostRow("latency", "ms", [np.array([0.4, 0.9]), np.array([0.5, 1.0])], 0.8)
    with pytest.raises(InfeasibleBudgetError, match=r"latency budget 0\.8 ms < minimum achievable 0\.9 ms") as e:
        solve_mcknapsack(values, costs, costs, 10.0, 10.0, extra=[lat])
    assert e.value.binding == ["latency"] and e.value.minimums["latency"] == pytest.approx(0.9)
    roomy = CostRow("latency", "ms", lat.costs, 1.45)
    sol = solve_mcknapsack(values, costs, costs, 10.0, 10.0, extra=[roomy], mip_rel_gap=0.0)
    assert sol.indices.tolist() == [0, 1]  # 0.4 + 1.0 fits; 0.9 + 1.0 does not


def three_row_problem(fraction=0.5, fixed_ms=0.0):
    """One layer heavy in MACs, one in parameters, one in latency: each budget has its own layer to cut."""
    sig = np.ones(6)
    layers = (LayerSpectrum("macs", sig, 10.0, 1.0, 200.0, 200.0),
              LayerSpectrum("params", sig, 1.0, 10.0, 200.0, 200.0),
              LayerSpectrum("latency", sig, 1.0, 1.0, 200.0, 200.0))
    lat = latency_of(3, [0.1, 0.1, 1.0], [0.0, 0.0, 0.0], [100.0, 100.0, 100.0], np.inf, fixed=fixed_ms)
    p = RankProblem(layers, np.inf, np.inf, extra=(lat,))
    A, c = p.linear_rows()
    full = A.sum(axis=1) + c
    return p.with_budgets(fraction * full[0], fraction * full[1], [fraction * full[2]])


def test_sqp_with_three_budgets_binds_all_three_at_the_optimum():
    p = three_row_problem()
    n = p.n_masks
    w = np.linspace(1.0, 2.0, n)

    def oracle(m, k):
        r = m - 1.5  # every mask wants to be on: each budget must cut its own layer
        return 0.5 * float(w @ r**2), w * r

    res = solve_relaxed(p, oracle, options=SQPOptions(max_iter=200, kkt_tol=1e-9, step_tol=0.0, deterministic=True))
    A, c = p.linear_rows()
    values = A @ res.masks + c
    assert np.all(values <= p.budgets * (1 + 1e-9))
    np.testing.assert_allclose(values, p.budgets, rtol=1e-6)  # all three bind
    assert res.history[-1]["N_extra"]["latency"] == pytest.approx(values[2])
    cons = [{"type": "ineq", "fun": lambda v: p.budgets - c - A @ v, "jac": lambda v: -A}]
    ref = minimize(lambda v: oracle(v, 0)[0], np.zeros(n), jac=lambda v: oracle(v, 0)[1], bounds=[(0, 1)] * n,
                   constraints=cons, method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    assert res.loss <= ref.fun + 1e-7
    sel = round_ranks(p, res.masks, draws=8)
    assert p.feasible(sel.ranks) and "latency" in sel.info["extra_costs"]


def test_infeasible_latency_is_named_with_its_minimum_everywhere():
    p = three_row_problem(fixed_ms=1.0)
    tight = p.with_budgets(p.compute_budget, p.param_budget, [0.5])
    min_latency = float(p.min_costs[2])  # rank 1 everywhere: 1 + 0.1 + 0.1 + 1
    runs = [(lambda: select_min_error(tight), min_latency), (lambda: BASELINES["uniform"](tight), min_latency),
            (lambda: round_ranks(tight, np.ones(p.n_masks)), min_latency),
            (lambda: solve_relaxed(tight, lambda m, k: (0.0, m)), 1.0)]  # relaxed: every mask at 0
    for run, minimum in runs:
        with pytest.raises(InfeasibleBudgetError, match=rf"latency budget 0\.5 ms < minimum achievable {minimum:.6g} ms") as e:
            run()
        assert e.value.binding == ["latency"] and e.value.minimums["latency"] == pytest.approx(minimum)


@pytest.mark.parametrize("method", ["uniform", "cptv", "pos-greedy", "pos-cvx"])
def test_budgeted_baselines_respect_the_latency_budget(method):
    roomy = three_row_problem(0.9)
    p = roomy.with_budgets(roomy.compute_budget, roomy.param_budget, [0.4 * roomy.budgets[2] / 0.9])
    macs_only = RankProblem(p.layers, p.compute_budget, p.param_budget)
    loose = BASELINES[method](macs_only)
    assert not p.feasible(loose.ranks)  # the latency budget binds
    sel = BASELINES[method](p)
    assert p.feasible(sel.ranks) and sel.info["meets_budgets"]
    assert sel.info["extra_costs"]["latency"] <= sel.info["extra_budgets"]["latency"] * (1 + 1e-12)


# ---- break-even and the latency table -----------------------------------------------------------
TABLE = {"fixed_ms": 0.5, "layers": {
    "a": {"original_ms": 1.0, "intercept_ms": 0.2, "slope_ms": 0.15, "ranks": [1, 4], "max_rank": 8},  # >= dense at 6
    "b": {"original_ms": 2.0, "intercept_ms": 0.0, "slope_ms": 0.1, "ranks": [1, 4], "max_rank": 8},  # faster always
}}


def mac_problem():
    sig = np.linspace(8.0, 1.0, 8)
    return RankProblem((LayerSpectrum("a", sig, 10, 5, 100, 60), LayerSpectrum("b", sig, 10, 5, 100, 60)), 1e9, 1e9)


def test_the_latency_budget_caps_break_even_like_the_latency_table():
    p = with_latency_budget(mac_problem(), TABLE, 2.0)
    assert [l.break_even_rank for l in p.layers] == [6, 9]  # 0.2 + 0.15 r >= 1.0 from r = 6 on
    a = p.layers[0]
    assert a.is_factored(5) and not a.is_factored(6) and a.cost(6) == (100.0, 60.0)
    assert p.extra_cost([6, 1]).tolist() == pytest.approx([0.5 + 1.0 + 0.1])
    strict = with_latency_budget(mac_problem(), TABLE, 2.0, never_slower=True)
    assert strict.layers[0].break_even_rank == latency_break_even_rank(TABLE["layers"]["a"], 8) == 5
    assert NOT_FASTER < 1


def test_predicted_latency_agrees_with_the_latency_as_compute_problem():
    three = with_latency_budget(mac_problem(), TABLE, np.inf)
    replaced = latency_problem(mac_problem(), TABLE, np.inf)
    assert [l.break_even_rank for l in three.layers] == [l.break_even_rank for l in replaced.layers]
    for ranks in itertools.product(range(1, 9), repeat=2):
        assert predicted_latency_ms(three, ranks) == pytest.approx(predicted_latency_ms(replaced, ranks))
    with pytest.raises(ValueError, match="no latency"):
        predicted_latency_ms(mac_problem(), [1, 1])


def test_extra_budgets_are_refused_on_choice_layers_and_kept_by_with_budgets():
    from edgecomp.ranks.choices import ChoiceLayer

    choice = ChoiceLayer("t", np.ones(2), 1.0, 1.0, 10.0, 10.0, r1s=np.array([1, 4]), r2s=np.array([1, 4]),
                         choice_compute=np.array([2.0, 10.0]), choice_params=np.array([2.0, 10.0]),
                         errors=np.array([1.0, 0.0]), weight_energy=4.0)
    with pytest.raises(ValueError, match="choice layers"):
        RankProblem((choice,), 1.0, 1.0, extra=(latency_of(1, [0.1], [0.0], [1.0], 1.0),))
    p = with_latency_budget(mac_problem(), TABLE, 2.0)
    q = p.with_budgets(50.0, 50.0)
    assert q.extra == p.extra and q.budgets.tolist() == [50.0, 50.0, 2.0]
    assert [label for label, _ in q.budget_rows()] == ["MAC", "parameter", "latency"]


def test_newton_handles_rows_in_very_different_units_without_falling_back():
    rng = np.random.default_rng(8)
    n = 4000
    layer_of = rng.integers(0, 40, n)
    A = (rng.uniform(0.5, 5.0, (3, 40)) * np.array([[1e6], [1e3], [1e-3]]))[:, layer_of]  # MACs, params, ms
    P = LinearPolytope(A, A @ np.full(n, 0.3) * np.array([1.0, 1.2, 0.9]))
    z = np.clip(rng.normal(0.8, 0.5, n), -1, 2)
    for _ in range(6):
        z = z + 0.02 * rng.normal(size=n)
        assert_kkt(P, z, P.project(z))
    assert P.fallbacks == 0 and np.count_nonzero(P.mu) >= 2
