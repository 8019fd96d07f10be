"""COBLA solver (edgecomp.ranks.cobla): projection, L-BFGS, QP, SQP, rounding, shrinking."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from edgecomp.errors import InfeasibleBudgetError, VerificationError
from edgecomp.ranks.cobla import (
    BudgetPolytope,
    CompactLBFGS,
    SQPOptions,
    heuristic_budgets,
    kept_components,
    round_ranks,
    shrink_from_heuristics,
    solve_qp,
    solve_relaxed,
)
from edgecomp.ranks.problem import LayerSpectrum, RankProblem


# ---- helpers ---------------------------------------------------------------------------
def make_problem(rng, n_layers=4, kmax=8, frac=0.4, unfactored_factor=(1.2, 2.0)):
    layers = []
    for i in range(n_layers):
        k = int(rng.integers(2, kmax + 1))
        sigma = np.sort(rng.exponential(1.0, k))[::-1]
        mpr, ppr = float(rng.uniform(100, 1000)), float(rng.uniform(10, 100))
        f = rng.uniform(*unfactored_factor, size=2)
        layers.append(LayerSpectrum(f"l{i}", sigma, mpr, ppr, original_compute=mpr * k * f[0],
                                    original_params=ppr * k * f[1] + 5.0, bias_params=5.0))
    probe = RankProblem(layers, 1.0, 1.0, fixed_compute=50.0, fixed_params=20.0)
    a_c, a_m, c_c, c_m = probe.linear_costs()
    return RankProblem(layers, c_c + frac * a_c.sum(), c_m + 1.1 * frac * a_m.sum(),
                       fixed_compute=50.0, fixed_params=20.0)


def quadratic_oracle(rng, n, shift_noise=0.0):
    H = rng.normal(size=(n, n))
    H = H @ H.T / n + 0.05 * np.eye(n)
    target = rng.uniform(0.0, 1.2, n)

    def oracle(m, k):
        t = target
        if shift_noise:  # a "sub-sample": the same for every call with the same iteration index
            t = target + shift_noise * np.random.default_rng(1000 + k).normal(size=n)
        r = m - t
        return 0.5 * float(r @ H @ r), H @ r

    def exact(m):
        r = m - target
        return 0.5 * float(r @ H @ r), H @ r

    return oracle, exact


def slsqp_reference(problem, fun_grad, fixed=None):
    a_c, a_m, c_c, c_m = problem.linear_costs()
    n = problem.n_masks
    bounds = [(0.0, 1.0)] * n
    if fixed is not None:
        bounds = [(0.0, 1.0) if f == -1 else (float(f), float(f)) for f in fixed]
    cons = [{"type": "ineq", "fun": lambda v: problem.compute_budget - c_c - a_c @ v, "jac": lambda v: -a_c},
            {"type": "ineq", "fun": lambda v: problem.param_budget - c_m - a_m @ v, "jac": lambda v: -a_m}]
    res = minimize(lambda v: fun_grad(v)[0], np.zeros(n), jac=lambda v: fun_grad(v)[1], bounds=bounds,
                   constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
    return res


def relaxed_feasible(problem, m, rtol=1e-9):
    a_c, a_m, c_c, c_m = problem.linear_costs()
    return (m.min() >= -1e-12 and m.max() <= 1 + 1e-12
            and a_c @ m + c_c <= problem.compute_budget * (1 + rtol)
            and a_m @ m + c_m <= problem.param_budget * (1 + rtol))


def random_polytope(rng, n, parallel=False, zero_budget=False):
    n_layers = int(rng.integers(1, 4))
    layer = rng.integers(0, n_layers, n)
    a_c = rng.uniform(0.5, 5.0, n_layers)[layer]
    a_m = a_c * rng.uniform(0.5, 2.0) if parallel else rng.uniform(0.5, 5.0, n_layers)[layer]
    x0 = rng.random(n)
    b_c = 0.0 if zero_budget else float(a_c @ x0 * rng.uniform(0.0, 1.2))
    b_m = float(a_m @ x0 * rng.uniform(0.0, 1.2))
    return BudgetPolytope(a_c, a_m, b_c, b_m)


def assert_projection_kkt(P, z, x):
    """x = clip(z - A'mu, 0, 1), mu >= 0, A x <= b, complementary slackness."""
    mu = P.mu
    assert np.all(mu >= 0)
    np.testing.assert_allclose(x, np.clip(z - mu @ P.A, 0.0, 1.0), atol=1e-12)
    r = P.A @ x - P.b
    scale = P.A.sum(axis=1) + np.abs(P.b) + 1.0
    assert np.all(r <= 1e-10 * scale)
    assert np.all(np.abs(mu * r) <= 1e-9 * scale * (1 + mu))


# ---- projection ------------------------------------------------------------------------
def test_projection_matches_scipy_on_random_instances():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 12))
        P = random_polytope(rng, n, parallel=trial % 4 == 1, zero_budget=trial % 7 == 3)
        z = rng.normal(0.5, 1.5, n)
        x = P.project(z)
        assert_projection_kkt(P, z, x)
        cons = [{"type": "ineq", "fun": lambda v: P.b - P.A @ v, "jac": lambda v: -P.A}]
        ref = minimize(lambda v: 0.5 * np.sum((v - z) ** 2), np.zeros(n), jac=lambda v: v - z,
                       bounds=[(0, 1)] * n, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 500})
        np.testing.assert_allclose(x, ref.x, atol=1e-6)
        assert 0.5 * np.sum((x - z) ** 2) <= 0.5 * np.sum((ref.x - z) ** 2) + 1e-10


def test_projection_case_analysis_agrees_with_newton():
    rng = np.random.default_rng(1)
    checked = 0
    for trial in range(80):
        n = int(rng.integers(1, 40))
        P = random_polytope(rng, n, parallel=trial % 3 == 0)
        z = rng.normal(0.5, 1.5, n)
        x = P.project(z)
        if np.all(P.A @ np.clip(z, 0, 1) <= P.b):
            continue
        mu_cases = P._cases(z)
        np.testing.assert_allclose(np.clip(z - mu_cases @ P.A, 0, 1), x, atol=1e-9)
        checked += 1
    assert checked > 30


def test_projection_large_warm_started_sequence_is_exact():
    rng = np.random.default_rng(2)
    n, n_layers = 4000, 30
    layer = np.sort(rng.integers(0, n_layers, n))
    a_c, a_m = rng.uniform(1e3, 1e6, n_layers)[layer], rng.uniform(1e2, 1e4, n_layers)[layer]
    P = BudgetPolytope(a_c, a_m, 0.3 * a_c.sum(), 0.35 * a_m.sum())
    z = rng.random(n) * 1.5
    for _ in range(10):
        z = z + rng.normal(0, 0.02, n)
        x = P.project(z)
        assert_projection_kkt(P, z, x)
        assert P.contains(x)


def test_projection_inside_point_is_unchanged_and_empty_set_detected():
    P = BudgetPolytope(np.ones(3), np.ones(3), 10.0, 10.0)
    z = np.array([0.2, 0.5, 0.9])
    np.testing.assert_array_equal(P.project(z), z)
    assert BudgetPolytope(np.ones(3), np.ones(3), -1.0, 1.0).is_empty
    with pytest.raises(ValueError):
        BudgetPolytope(np.array([1.0, -1.0]), np.ones(2), 1.0, 1.0)


# ---- L-BFGS ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 7, 25])
def test_compact_lbfgs_equals_explicit_bfgs(n):
    rng = np.random.default_rng(n)
    H = rng.normal(size=(n, n))
    H = H @ H.T + 0.1 * np.eye(n)
    B = CompactLBFGS(n, memory=4, damping=0.2)
    for it in range(9):
        s = rng.normal(size=n)
        y = H @ s if it % 3 else -rng.normal(size=n) - s  # some pairs with s'y < 0 get damped
        B.update(s, y)
    assert B.k == 4
    explicit = B.delta * np.eye(n)
    for s, y in zip(B.S, B.Y):
        assert s @ y > 0  # damping kept every stored pair positive
        Bs = explicit @ s
        explicit = explicit - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (s @ y)
    np.testing.assert_allclose(B.dense(), explicit, rtol=1e-10, atol=1e-10 * np.abs(explicit).max())
    v = rng.normal(size=n)
    np.testing.assert_allclose(B.matvec(v), explicit @ v, rtol=1e-9, atol=1e-9 * np.abs(explicit).max())
    eig = np.linalg.eigvalsh(explicit)
    assert eig[0] > 0
    np.testing.assert_allclose(B.eig_bounds(), (eig[0], eig[-1]), rtol=1e-8)


def test_powell_damping_and_skipping():
    B = CompactLBFGS(5, memory=3, damping=0.2, delta=2.0)
    s = np.array([1.0, 0, 0, 0, 0])
    info = B.update(s, -s)  # negative curvature
    assert info["damped"] and not info["skipped"]
    assert B.S[0] @ B.Y[0] == pytest.approx(0.2 * 2.0)  # s'y = damping * s'B0 s
    assert B.update(np.zeros(5), np.ones(5))["skipped"]
    assert B.k == 1


# ---- QP ----------------------------------------------------------------------------------
def test_qp_matches_slsqp():
    rng = np.random.default_rng(3)
    for _ in range(15):
        n = int(rng.integers(2, 12))
        a_c, a_m = rng.uniform(1, 5, n), rng.uniform(1, 5, n)
        P = BudgetPolytope(a_c, a_m, 0.4 * a_c.sum(), 0.5 * a_m.sum())
        m = P.project(rng.random(n))
        B = CompactLBFGS(n, 5)
        H = rng.normal(size=(n, n))
        H = H @ H.T + 0.5 * np.eye(n)
        for _ in range(6):
            s = rng.normal(size=n)
            B.update(s, H @ s)
        g = 3 * rng.normal(size=n)
        res = solve_qp(g, B, m, P, max_iter=5000, rtol=1e-12)
        Bd = B.dense()
        cons = [{"type": "ineq", "fun": lambda v: P.b - P.A @ v, "jac": lambda v: -P.A}]
        ref = minimize(lambda v: g @ (v - m) + 0.5 * (v - m) @ Bd @ (v - m), m,
                       jac=lambda v: g + Bd @ (v - m), bounds=[(0, 1)] * n, constraints=cons,
                       method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
        assert P.contains(res.x)
        assert res.value <= ref.fun + 1e-9
        np.testing.assert_allclose(res.x, ref.x, atol=1e-5)


# ---- SQP -------------------------------------------------------------------------------
def test_solver_reaches_slsqp_optimum_and_every_iterate_is_feasible():
    rng = np.random.default_rng(4)
    for _ in range(4):
        problem = make_problem(rng)
        oracle, exact = quadratic_oracle(rng, problem.n_masks)
        iterates = []
        res = solve_relaxed(problem, oracle,
                            options=SQPOptions(max_iter=300, deterministic=True, step_tol=1e-10, kkt_tol=1e-9),
                            callback=lambda rec: iterates.append(rec["masks"]))
        ref = slsqp_reference(problem, exact)
        assert res.converged and res.reason in ("step norm", "KKT residual")
        assert res.loss == pytest.approx(ref.fun, rel=1e-7, abs=1e-9)
        np.testing.assert_allclose(res.masks, ref.x, atol=1e-4)
        assert iterates and all(relaxed_feasible(problem, m) for m in iterates)
        assert all(h["N_C"] <= problem.compute_budget * (1 + 1e-9) for h in res.history)
        assert {"loss", "N_C", "N_M", "step_norm", "step_size", "kkt_residual", "solver_s"} <= set(res.history[0])


def test_stochastic_oracle_converges_near_optimum():
    rng = np.random.default_rng(5)
    problem = make_problem(rng, n_layers=5)
    oracle, exact = quadratic_oracle(rng, problem.n_masks, shift_noise=0.05)
    res = solve_relaxed(problem, oracle, options=SQPOptions(max_iter=60))
    ref = slsqp_reference(problem, exact)
    assert relaxed_feasible(problem, res.masks)
    gap = exact(res.masks)[0] - ref.fun
    start_gap = exact(solve_relaxed(problem, oracle, options=SQPOptions(max_iter=0)).masks)[0] - ref.fun
    assert gap <= 0.05 * start_gap + 1e-3
    assert np.abs(res.masks - ref.x).max() < 0.15


def test_fixed_variables_are_respected_and_only_free_ones_move():
    rng = np.random.default_rng(6)
    problem = make_problem(rng, frac=0.5)
    n = problem.n_masks
    fixed = np.full(n, -1)
    for lo in problem.offsets[:-1]:
        fixed[lo] = 1  # top component kept
    fixed[problem.offsets[1:] - 1] = 0  # last component dropped
    oracle, exact = quadratic_oracle(rng, n)
    seen = []

    def watching(m, k):
        seen.append(m.copy())
        return oracle(m, k)

    res = solve_relaxed(problem, watching, fixed=fixed,
                        options=SQPOptions(max_iter=300, deterministic=True, step_tol=1e-10, kkt_tol=1e-9))
    for m in seen + [res.masks]:
        np.testing.assert_array_equal(m[fixed == 1], 1.0)
        np.testing.assert_array_equal(m[fixed == 0], 0.0)
    ref = slsqp_reference(problem, exact, fixed=fixed)
    assert res.loss == pytest.approx(ref.fun, rel=1e-6, abs=1e-8)


def test_infeasible_relaxed_problem_raises_before_calling_the_oracle():
    rng = np.random.default_rng(7)
    problem = make_problem(rng)
    tight = problem.with_budgets(problem.fixed_compute * 0.5, problem.param_budget)

    def oracle(m, k):
        raise AssertionError("must not be called")

    with pytest.raises(InfeasibleBudgetError) as err:
        solve_relaxed(tight, oracle)
    assert err.value.min_macs == pytest.approx(problem.fixed_compute)
    fixed = np.ones(problem.n_masks, dtype=int)  # everything on: over the budget
    with pytest.raises(InfeasibleBudgetError):
        solve_relaxed(problem, oracle, fixed=fixed)


def test_everything_fixed_and_zero_budget():
    rng = np.random.default_rng(14)
    problem = make_problem(rng)
    fixed = np.zeros(problem.n_masks, dtype=int)
    fixed[problem.offsets[:-1]] = 1
    calls = []
    res = solve_relaxed(problem, lambda m, k: calls.append(k) or (1.0, np.ones_like(m)), fixed=fixed)
    assert (res.reason, res.iterations, calls) == ("KKT residual", 0, [0])
    np.testing.assert_array_equal(res.masks, fixed.astype(float))
    with pytest.raises(InfeasibleBudgetError):
        solve_relaxed(problem.with_budgets(0.0, problem.param_budget), lambda m, k: (0.0, m))


def test_infeasible_start_is_projected_keeping_top_components():
    rng = np.random.default_rng(8)
    problem = make_problem(rng, frac=0.3)
    res = solve_relaxed(problem, lambda m, k: (0.0, np.zeros_like(m)), options=SQPOptions(max_iter=0))
    assert res.start == "projected" and relaxed_feasible(problem, res.masks)
    for layer_masks in problem.split(res.masks):
        assert np.all(np.diff(layer_masks) <= 1e-12)  # non-increasing along the spectrum
    feasible_m0 = res.masks * 0.5
    res2 = solve_relaxed(problem, lambda m, k: (0.0, np.zeros_like(m)), m0=feasible_m0,
                         options=SQPOptions(max_iter=0))
    assert res2.start == "m0"
    np.testing.assert_array_equal(res2.masks, feasible_m0)
    with pytest.raises(ValueError):
        solve_relaxed(problem, lambda m, k: (0.0, m), m0=np.full(problem.n_masks, 2.0))


def test_stopping_reasons():
    rng = np.random.default_rng(9)
    problem = make_problem(rng)
    oracle, _ = quadratic_oracle(rng, problem.n_masks)
    res = solve_relaxed(problem, oracle, options=SQPOptions(max_iter=2))
    assert (res.reason, res.converged, res.iterations) == ("max iterations", False, 2)

    res = solve_relaxed(problem, oracle, options=SQPOptions(max_iter=500, deterministic=True))
    assert res.reason == "step norm" and res.converged

    # an interior optimum: the start is already a KKT point
    center = np.full(problem.n_masks, 0.01)
    res = solve_relaxed(problem, lambda m, k: (0.5 * float((m - center) @ (m - center)), m - center), m0=center)
    assert (res.reason, res.converged, res.iterations) == ("KKT residual", True, 0)

    def slow(m, k):
        time.sleep(0.02)
        return oracle(m, k)

    res = solve_relaxed(problem, slow, options=SQPOptions(max_iter=1000, time_limit_s=0.05, step_tol=0))
    assert res.reason == "time limit" and not res.converged and res.iterations < 1000

    res = solve_relaxed(problem, oracle, callback=lambda rec: rec["iteration"] >= 1)
    assert res.reason == "callback" and res.iterations == 2


def test_non_finite_oracle_is_reported():
    problem = make_problem(np.random.default_rng(10))
    with pytest.raises(VerificationError):
        solve_relaxed(problem, lambda m, k: (float("nan"), np.zeros_like(m)))
    with pytest.raises(VerificationError):
        solve_relaxed(problem, lambda m, k: (0.0, np.zeros(3)))


@pytest.mark.parametrize("window", [1, 5])
def test_line_search_enforces_the_nonmonotone_armijo_rule(window):
    """On a pseudo-Huber loss (curvature largest at the optimum) the first full step overshoots;
    every accepted loss obeys the GLL rule against the last `window` accepted losses."""
    rng = np.random.default_rng(11)
    problem = make_problem(rng, frac=0.7)
    n = problem.n_masks
    target = rng.uniform(0.5, 0.9, n)

    def oracle(m, k):
        r = 4.0 * (m - target)
        q = np.sqrt(1.0 + r * r)
        return float(np.sum(q)), 4.0 * r / q

    start = solve_relaxed(problem, oracle, options=SQPOptions(max_iter=0))
    res = solve_relaxed(problem, oracle, options=SQPOptions(max_iter=40, deterministic=True,
                                                             nonmonotone_window=window))
    losses = [start.loss] + [h["loss"] for h in res.history]
    for k in range(1, len(losses)):
        assert losses[k] <= max(losses[max(0, k - window):k]) + 1e-12
    assert any(h["backtracks"] > 0 for h in res.history)  # the rule was needed
    assert losses[-1] < losses[0] - 0.5 * (losses[0] - n)  # n = sum of the minima sqrt(1)


# ---- rounding ---------------------------------------------------------------------------
@st.composite
def problems_and_masks(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_layers = draw(st.integers(1, 5))
    layers = []
    for i in range(n_layers):
        k = int(rng.integers(1, 11))
        sigma = np.sort(rng.exponential(1.0, k))[::-1]
        mpr, ppr = float(rng.uniform(10, 1000)), float(rng.uniform(10, 1000))
        layers.append(LayerSpectrum(f"l{i}", sigma, mpr, ppr,
                                    original_compute=mpr * k * float(rng.uniform(0.3, 2.0)),
                                    original_params=ppr * k * float(rng.uniform(0.3, 2.0)) + 3.0,
                                    bias_params=3.0))
    probe = RankProblem(layers, 1.0, 1.0, fixed_compute=10.0, fixed_params=10.0)
    lo_c, lo_m = probe.min_cost
    hi_c, hi_m = probe.original_cost
    t = draw(st.floats(0.0, 1.0))
    problem = probe.with_budgets(lo_c + t * (hi_c - lo_c), lo_m + draw(st.floats(0.0, 1.0)) * (hi_m - lo_m))
    masks = rng.random(problem.n_masks) ** draw(st.sampled_from([0.3, 1.0, 3.0]))
    return problem, masks, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems_and_masks())
def test_rounding_always_returns_feasible_ranks(data):
    problem, masks, seed = data
    sel = round_ranks(problem, masks, draws=6, seed=seed % 1000)
    assert problem.feasible(sel.ranks)
    assert np.all(sel.ranks >= 1) and np.all(sel.ranks <= problem.max_ranks)
    for c in sel.info["candidates"]:
        assert problem.feasible(np.array(c["ranks"]))
    kept = kept_components(problem, masks, sel.ranks)
    assert [k.size for k in kept] == sel.ranks.tolist()


def test_rounding_of_relaxed_solution_with_loss_fn_picks_smallest_loss():
    rng = np.random.default_rng(12)
    problem = make_problem(rng, frac=0.5)
    oracle, _ = quadratic_oracle(rng, problem.n_masks)
    res = solve_relaxed(problem, oracle, options=SQPOptions(max_iter=100, deterministic=True))
    calls = []

    def loss_fn(ranks):
        calls.append(tuple(ranks))
        return float(np.sum((ranks - 3) ** 2))

    sel = round_ranks(problem, res.masks, draws=16, seed=3, loss_fn=loss_fn)
    assert problem.feasible(sel.ranks)
    assert len(calls) == len(set(calls)) == len(sel.info["candidates"])  # each candidate once
    assert sel.info["criterion"] == "loss"
    assert loss_fn(sel.ranks) == min(c["loss"] for c in sel.info["candidates"])
    again = round_ranks(problem, res.masks, draws=16, seed=3, loss_fn=loss_fn)
    np.testing.assert_array_equal(again.ranks, sel.ranks)  # seeded


def test_break_even_layer_is_lowered_below_break_even():
    # layer a: MAC break-even at rank 2, but the original has 10x the params of rank 1
    a = LayerSpectrum("a", np.array([3.0, 2.0, 1.0, 0.5]), compute_per_rank=100.0, params_per_rank=10.0,
                      original_compute=150.0, original_params=100.0)
    b = LayerSpectrum("b", np.array([2.0, 1.0, 0.5]), compute_per_rank=100.0, params_per_rank=10.0,
                      original_compute=1000.0, original_params=1000.0)
    assert a.break_even_rank == 2
    problem = RankProblem((a, b), compute_budget=1000.0, param_budget=45.0)
    masks = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.4, 0.0])  # s = (2, 1.4): linear params 20 + 14
    a_c, a_m, c_c, c_m = problem.linear_costs()
    assert a_m @ masks + c_m <= problem.param_budget  # relaxed-feasible ...
    assert not problem.feasible([2, 1])  # ... but rank 2 builds the 100-parameter original
    sel = round_ranks(problem, masks, draws=8, seed=0)
    assert sel.ranks[0] == a.break_even_rank - 1
    assert problem.feasible(sel.ranks)
    # with a roomy parameter budget the unfactored layer is affordable and kept
    roomy = problem.with_budgets(1000.0, 200.0)
    assert round_ranks(roomy, masks, draws=0).ranks[0] == 2


def test_rounding_without_loss_fn_maximises_kept_energy_and_keeps_top_components():
    layer = LayerSpectrum("only", np.array([4.0, 3.0, 2.0, 1.0]), 10.0, 10.0, 1000.0, 1000.0)
    problem = RankProblem((layer,), compute_budget=25.0, param_budget=25.0)
    masks = np.array([1.0, 0.2, 0.9, 0.4])  # s = 2.5; component 2 outweighs component 1
    sel = round_ranks(problem, masks, draws=16, seed=0)
    assert sel.ranks.tolist() == [2] and sel.info["criterion"] == "kept_energy"
    np.testing.assert_array_equal(kept_components(problem, masks, sel.ranks)[0], [0, 2])


def test_rounding_raises_when_even_rank_one_does_not_fit():
    layer = LayerSpectrum("only", np.array([1.0, 0.5]), 10.0, 10.0, 1000.0, 1000.0)
    problem = RankProblem((layer,), compute_budget=5.0, param_budget=100.0)
    with pytest.raises(InfeasibleBudgetError) as err:
        round_ranks(problem, np.array([1.0, 1.0]))
    assert err.value.min_macs == pytest.approx(10.0)
    with pytest.raises(ValueError):
        round_ranks(problem, np.array([1.0]))


# ---- shrinking ---------------------------------------------------------------------------
def test_shrink_from_heuristics_fixes_unanimous_components():
    layers = (LayerSpectrum("a", np.linspace(10, 1, 10), 1.0, 1.0, 100.0, 100.0),
              LayerSpectrum("b", np.linspace(5, 1, 6), 1.0, 1.0, 100.0, 100.0))
    problem = RankProblem(layers, 10.0, 10.0)
    strict = [np.array([4, 2]), np.array([5, 1])]
    loose = [np.array([7, 3]), np.array([8, 2])]
    fixed = shrink_from_heuristics(problem, strict, loose, margin=0)
    a, b = problem.split(fixed)
    assert a.tolist() == [1, 1, 1, 1, -1, -1, -1, -1, 0, 0]
    assert b.tolist() == [1, -1, -1, 0, 0, 0]
    a1, b1 = problem.split(shrink_from_heuristics(problem, strict, loose))  # reference margin 1
    assert a1.tolist() == [1, 1, 1, -1, -1, -1, -1, -1, -1, 0]
    assert b1.tolist() == [-1, -1, -1, -1, 0, 0]
    # never fix the top component off; contradictory heuristics leave components free
    a2, b2 = problem.split(shrink_from_heuristics(problem, [np.array([6, 0])], [np.array([3, 0])], margin=0))
    assert a2.tolist() == [1, 1, 1, -1, -1, -1, 0, 0, 0, 0]
    assert b2[0] == -1 and np.all(b2[1:] == 0)
    # a layer every heuristic keeps whole is fixed whole, even with margin 1
    _, b3 = problem.split(shrink_from_heuristics(problem, [np.array([4, 6])], [np.array([7, 6])]))
    assert np.all(b3 == 1)
    with pytest.raises(ValueError):
        shrink_from_heuristics(problem, [np.array([1])], loose)


def test_heuristic_budgets_follow_the_reference_factors():
    layer = LayerSpectrum("a", np.ones(4), 10.0, 10.0, 100.0, 80.0)
    problem = RankProblem((layer,), compute_budget=50.0, param_budget=60.0, fixed_compute=0.0, fixed_params=20.0)
    strict, loose = heuristic_budgets(problem)
    assert strict.compute_budget == pytest.approx(100 * (1 - 0.5 * 1.8))
    assert strict.param_budget == pytest.approx(100 * (1 - 0.4 * 1.8))
    assert loose.compute_budget == pytest.approx(100 * (1 - 0.5 * 0.2))
    assert strict.compute_budget <= problem.compute_budget <= loose.compute_budget


def test_solver_on_shrunk_problem_matches_fixed_reference():
    rng = np.random.default_rng(13)
    problem = make_problem(rng, frac=0.5)
    strict, loose = heuristic_budgets(problem)
    fixed = shrink_from_heuristics(problem, [np.maximum(problem.max_ranks // 4, 1)],
                                   [np.maximum(problem.max_ranks - 1, 1)], margin=0)
    assert np.any(fixed == 1) and np.any(fixed == 0)
    oracle, exact = quadratic_oracle(rng, problem.n_masks)
    res = solve_relaxed(problem, oracle, fixed=fixed,
                        options=SQPOptions(max_iter=300, deterministic=True, step_tol=1e-10, kkt_tol=1e-9))
    ref = slsqp_reference(problem, exact, fixed=fixed)
    assert res.loss == pytest.approx(ref.fun, rel=1e-6, abs=1e-8)
    assert strict.compute_budget <= problem.compute_budget <= loose.compute_budget
