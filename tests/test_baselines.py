"""Baseline rank selectors and the exact knapsack selector: feasibility, monotonicity, optimality."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecomp.errors import InfeasibleBudgetError, UserInputError
from edgecomp.ranks.baselines import BASELINES, select_cptv, select_pos_cvx, select_pos_greedy, select_uniform
from edgecomp.ranks.baselines._common import cumulative_energy, pos_objective
from edgecomp.ranks.baselines.cptv import threshold_ranks
from edgecomp.ranks.baselines.gavish_donoho import lambda_star, marchenko_pastur_median, omega_coefficient
from edgecomp.ranks.baselines.uniform import uniform_ranks
from edgecomp.ranks.baselines.vbmf import evbmf_rank
from edgecomp.ranks.knapsack import mcknapsack, select_min_error, solve_mcknapsack
from edgecomp.ranks.problem import LayerSpectrum, RankProblem

BUDGETED = ("uniform", "cptv", "pos-greedy", "pos-cvx")
# selectors that follow one budget-independent path, hence monotone in both costs
PATH_METHODS = {
    "uniform": select_uniform,
    "cptv": select_cptv,
    "pos-greedy": select_pos_greedy,
    "pos-greedy-loss": lambda p: select_pos_greedy(p, measure="loss"),
}
PROPS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])
EXACT = {"mip_rel_gap": 0.0, "time_limit": None}


# ---- random problems ------------------------------------------------------------------------
@st.composite
def problems(draw, max_layers: int = 6, max_rank: int = 8):
    layers = []
    for i in range(draw(st.integers(1, max_layers))):
        k = draw(st.integers(1, max_rank))
        sigma = draw(st.lists(st.floats(0.0, 10.0, allow_nan=False, allow_subnormal=False),
                              min_size=k, max_size=k))
        mpr = draw(st.floats(1.0, 100.0))
        ppr = draw(st.floats(1.0, 100.0))
        bias = draw(st.sampled_from([0.0, 0.0, 1.0, 16.0]))
        # original cost worth between 0.05 and k + 1.95 ranks: break-even anywhere in 1..k+1
        fm = draw(st.integers(0, k + 1)) + draw(st.floats(0.05, 0.95))
        fp = draw(st.integers(0, k + 1)) + draw(st.floats(0.05, 0.95))
        layers.append(LayerSpectrum(f"l{i}", np.sort(np.array(sigma))[::-1], mpr, ppr, original_compute=mpr * fm,
                                    original_params=ppr * fp + bias, bias_params=bias, shape=(k, k + 3)))
    p = RankProblem(layers, 0.0, 0.0, fixed_compute=draw(st.floats(0.0, 50.0)), fixed_params=draw(st.floats(0.0, 50.0)))
    # budgets between the smallest model and full rank everywhere (<= the original cost), where
    # the selectors have work to do
    (c_min, m_min), (c_max, m_max) = p.min_cost, p.cost(p.max_ranks)
    tc, tm = draw(st.floats(0.02, 0.98)), draw(st.floats(0.02, 0.98))
    return p.with_budgets(c_min + tc * (c_max - c_min), m_min + tm * (m_max - m_min))


def tighter(p: RankProblem, s_c: float, s_m: float) -> RankProblem:
    c_min, m_min = p.min_cost
    return p.with_budgets(c_min + s_c * (p.compute_budget - c_min), m_min + s_m * (p.param_budget - m_min))


def brute_force(p: RankProblem, value, maximize: bool = True) -> float:
    """Best total value over every rank combination r_i in 1..K_i that fits both budgets."""
    tot_v, tot_c, tot_m = np.zeros(1), np.full(1, p.fixed_compute), np.full(1, p.fixed_params)
    for layer in p.layers:
        rs = range(1, layer.max_rank + 1)
        v = np.array([value(layer, r) for r in rs])
        c = np.array([layer.cost(r) for r in rs])
        tot_v = np.add.outer(tot_v, v).ravel()
        tot_c = np.add.outer(tot_c, c[:, 0]).ravel()
        tot_m = np.add.outer(tot_m, c[:, 1]).ravel()
    ok = (tot_c <= p.compute_budget * (1 + 1e-12)) & (tot_m <= p.param_budget * (1 + 1e-12))
    assert ok.any()
    return float(tot_v[ok].max() if maximize else tot_v[ok].min())


def log_energy(layer: LayerSpectrum, r: int) -> float:
    """Independent reference: an unfactored layer keeps everything."""
    if not layer.is_factored(r):
        return 0.0
    e = layer.energy(r)
    return math.log(e) if e > 0 else -math.inf


def sq_error(layer: LayerSpectrum, r: int) -> float:
    return 0.0 if not layer.is_factored(r) else float(np.sum(layer.sigma[r:] ** 2))


# ---- budgeted selectors ---------------------------------------------------------------------
def test_registry():
    assert set(BASELINES) == {"uniform", "cptv", "pos-greedy", "pos-cvx", "vbmf", "gavish-donoho"}


@PROPS
@given(problems(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_budgeted_methods_feasible_and_monotone(p, s_c, s_m):
    q = tighter(p, s_c, s_m)
    for name, select in PATH_METHODS.items():
        loose, tight = select(p), select(q)
        for prob, sel in ((p, loose), (q, tight)):
            assert prob.feasible(sel.ranks), name
            assert np.all((sel.ranks >= 1) & (sel.ranks <= prob.max_ranks)), name
            assert sel.enforces_budgets and sel.info["meets_budgets"]
        lc, lm = p.cost(loose.ranks)
        tc, tm = q.cost(tight.ranks)
        assert tc <= lc * (1 + 1e-12) and tm <= lm * (1 + 1e-12), name


@PROPS
@given(problems(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_pos_cvx_feasible_and_objective_monotone(p, s_c, s_m):
    q = tighter(p, s_c, s_m)
    loose, tight = select_pos_cvx(p, **EXACT), select_pos_cvx(q, **EXACT)
    assert p.feasible(loose.ranks) and q.feasible(tight.ranks)
    # an exact optimizer trades one cost for the other, so only its objective is monotone
    assert tight.info["objective"] <= loose.info["objective"] + 1e-9


@PROPS
@given(problems())
def test_uniform_and_cptv_parameter_is_the_largest_feasible(p):
    sel = select_uniform(p)
    nxt = [r / k for k in p.max_ranks for r in range(1, k + 1) if r / k > sel.info["alpha"] + 1e-15]
    if nxt:
        assert not p.feasible(uniform_ranks(p, min(nxt)))
    sel = select_cptv(p)
    beta = sel.info["beta"]
    cums = [cumulative_energy(layer.sigma) for layer in p.layers]
    for c, r in zip(cums, sel.info["raw_ranks"]):  # the threshold rank: fewest components holding beta
        assert c[r - 1] >= beta and (r == 1 or c[r - 2] < beta)
    higher = [x for x in np.concatenate(cums) if x > beta]
    if higher:
        assert not p.feasible(threshold_ranks(cums, min(higher)))


@PROPS
@given(problems(max_layers=5, max_rank=6))
def test_pos_cvx_is_optimal_and_beats_greedy(p):
    best = brute_force(p, log_energy)
    cvx = select_pos_cvx(p, **EXACT)
    greedy = select_pos_greedy(p)
    assert cvx.info["objective"] == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert pos_objective(p, cvx.ranks) == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert cvx.info["objective"] >= pos_objective(p, greedy.ranks) - 1e-9


@PROPS
@given(problems(), st.data())
def test_infeasible_budget_raises_with_minimum_costs(p, data):
    c_min, m_min = p.min_cost
    which = data.draw(st.sampled_from(["macs", "params", "both"]))
    q = p.with_budgets(c_min * 0.999 if which != "params" else p.compute_budget,
                       m_min * 0.999 if which != "macs" else p.param_budget)
    for name in BUDGETED:
        with pytest.raises(InfeasibleBudgetError) as exc:
            BASELINES[name](q)
        assert exc.value.min_macs == pytest.approx(c_min) and exc.value.min_params == pytest.approx(m_min)
        assert f"{c_min:.6g}" in str(exc.value) and f"{m_min:.6g}" in str(exc.value)
        assert exc.value.exit_code == 2
    with pytest.raises(InfeasibleBudgetError):
        select_min_error(q)


def test_break_even_ranks_reported_as_full_rank():
    # break-even rank 3 of 6: ranks 3..5 build the unfactored layer, reported as 6
    layer = LayerSpectrum("a", np.array([5.0, 4, 3, 2, 1, 0.5]), 10.0, 10.0, original_compute=25.0,
                          original_params=25.0, shape=(6, 8))
    p = RankProblem([layer], compute_budget=25.0, param_budget=25.0)
    for name in BUDGETED:
        assert BASELINES[name](p).ranks.tolist() == [6], name
    p = p.with_budgets(20.0, 20.0)
    for name in BUDGETED:
        assert BASELINES[name](p).ranks.tolist() == [2], name


def test_pos_greedy_takes_the_break_even_step_by_its_score():
    # A: flat spectrum, unfactored at full rank (break-even 3); its one move jumps to rank 2,
    # loss log 2 for a saving of 5 MACs + 5 params. B: always factored, each step saves 1 + 1
    # but loses >= log(32.94/25.65) = 0.25; per unit of normalized cost A's step is cheapest.
    a = LayerSpectrum("a", np.ones(4), 10.0, 10.0, original_compute=25.0, original_params=25.0, shape=(4, 4))
    b = LayerSpectrum("b", np.array([3.0, 2.9, 2.8, 2.7]), 1.0, 1.0, 100.0, 100.0, shape=(4, 9))
    p = RankProblem([a, b], compute_budget=24.0, param_budget=24.0)
    sel = select_pos_greedy(p)
    assert sel.ranks.tolist() == [2, 4] and sel.info["steps"] == 1
    # COBLA's reference ordering (loss alone) strips B to rank 1 first, then still needs A's step
    assert select_pos_greedy(p, measure="loss").ranks.tolist() == [2, 1]


# ---- exact knapsack --------------------------------------------------------------------------
@PROPS
@given(problems(max_layers=5, max_rank=6), st.booleans(), st.data())
def test_min_error_is_optimal(p, override, data):
    spectra = None
    if override:
        spectra = [np.sort(np.array(data.draw(st.lists(st.floats(0.0, 5.0), min_size=l.max_rank,
                                                      max_size=l.max_rank))))[::-1] for l in p.layers]
        ref = [LayerSpectrum(l.name, s, l.compute_per_rank, l.params_per_rank, l.original_compute, l.original_params,
                             l.bias_params, l.shape) for l, s in zip(p.layers, spectra)]
        best = brute_force(RankProblem(ref, p.compute_budget, p.param_budget, p.fixed_compute, p.fixed_params),
                           sq_error, maximize=False)
    else:
        best = brute_force(p, sq_error, maximize=False)
    sel = select_min_error(p, spectra, **EXACT)
    assert p.feasible(sel.ranks)
    assert sel.info["squared_error"] == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert sel.method == "min-error"


@PROPS
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_mcknapsack_generic_groups_match_brute_force(seed, maximize):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=rng.integers(1, 6))
    values = [rng.normal(size=k) for k in sizes]
    macs = [rng.uniform(0, 10, size=k) for k in sizes]  # unordered costs: no structure to exploit
    params = [rng.uniform(0, 10, size=k) for k in sizes]
    compute_budget, param_budget = rng.uniform(0.2, 0.8) * 10 * len(sizes), rng.uniform(0.2, 0.8) * 10 * len(sizes)
    combos = np.array(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij")).reshape(len(sizes), -1).T
    tot = lambda arrs: np.array([sum(a[i] for a, i in zip(arrs, c)) for c in combos])  # noqa: E731
    v, c, m = tot(values), tot(macs), tot(params)
    ok = (c <= compute_budget) & (m <= param_budget)
    if not ok.any():
        with pytest.raises(InfeasibleBudgetError):
            mcknapsack(values, macs, params, compute_budget, param_budget, maximize, **EXACT)
        return
    idx = mcknapsack(values, macs, params, compute_budget, param_budget, maximize, **EXACT)
    assert sum(a[i] for a, i in zip(macs, idx)) <= compute_budget
    assert sum(a[i] for a, i in zip(params, idx)) <= param_budget
    best = v[ok].max() if maximize else v[ok].min()
    assert sum(a[i] for a, i in zip(values, idx)) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_knapsack_budget_exactly_on_a_cost_boundary():
    # Budgets equal to a reachable total: the answer must use them exactly, never exceed by rounding.
    values = [np.array([0.0, 1.0, 1.9]), np.array([0.0, 1.2, 2.0])]
    macs = [np.array([1e9, 2e9 + 1, 3e9 + 2]), np.array([1e9, 2e9 + 3, 3e9 + 5])]
    params = [np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])]
    sol = solve_mcknapsack(values, macs, params, 4e9 + 4, 10.0, mip_rel_gap=0.0)
    assert sol.indices.tolist() == [1, 1] and sol.objective == pytest.approx(2.2)
    sol = solve_mcknapsack(values, macs, params, 4e9 + 3.5, 10.0, mip_rel_gap=0.0)
    assert sol.indices.tolist() == [2, 0]


# ---- VBMF / Gavish-Donoho --------------------------------------------------------------------
def noisy_low_rank(rng, rows: int, cols: int, rank: int, noise: float) -> np.ndarray:
    u, _ = np.linalg.qr(rng.normal(size=(rows, rank)))
    v, _ = np.linalg.qr(rng.normal(size=(cols, rank)))
    signal = np.linspace(20.0, 8.0, rank)
    return (u * signal) @ v.T + noise * rng.normal(size=(rows, cols))


@pytest.mark.parametrize("rows,cols,rank,seed", [(40, 60, 4, 0), (60, 40, 7, 1), (50, 50, 3, 2), (30, 200, 5, 3)])
def test_vbmf_and_gavish_donoho_recover_rank(rows, cols, rank, seed):
    rng = np.random.default_rng(seed)
    noise = 0.1
    y = noisy_low_rank(rng, rows, cols, rank, noise)
    sigma = np.linalg.svd(y, compute_uv=False)
    r, sigma2, _ = evbmf_rank(sigma, min(rows, cols), max(rows, cols))
    assert r == rank
    assert sigma2 == pytest.approx(noise**2, rel=0.15)
    k = min(rows, cols)
    layer = LayerSpectrum("w", sigma, 1.0, 1.0, original_compute=10.0 * k, original_params=10.0 * k, shape=(rows, cols))
    p = RankProblem([layer], compute_budget=1.0, param_budget=1.0)
    for name in ("vbmf", "gavish-donoho"):
        sel = BASELINES[name](p)
        assert sel.ranks.tolist() == [rank], name
        assert not sel.enforces_budgets and sel.info["meets_budgets"] is False  # reported, not enforced
    assert BASELINES["gavish-donoho"](p, omega="approx").ranks.tolist() == [rank]


@PROPS
@given(problems())
def test_spectral_methods_report_budgets(p):
    for name in ("vbmf", "gavish-donoho"):
        sel = BASELINES[name](p)
        assert np.all((sel.ranks >= 1) & (sel.ranks <= p.max_ranks))
        assert sel.info["meets_budgets"] == p.feasible(sel.ranks)
        assert (sel.info["macs"], sel.info["params"]) == p.cost(sel.ranks)


def test_gavish_donoho_coefficients():
    assert lambda_star(1.0) == pytest.approx(4 / math.sqrt(3), rel=1e-12)
    assert omega_coefficient(1.0) == pytest.approx(2.858, abs=1e-3)  # the paper's value for square matrices
    assert marchenko_pastur_median(1.0) == pytest.approx(0.6528, abs=1e-4)
    for beta in np.linspace(0.02, 1.0, 25):  # the cubic fit (eq. 5) tracks the exact omega
        assert abs(omega_coefficient(beta) - omega_coefficient(beta, "approx")) < 0.011


def test_spectral_methods_need_the_matrix_shape():
    layer = LayerSpectrum("w", np.array([3.0, 2.0, 1.0]), 1.0, 1.0, 10.0, 10.0)  # shape unknown
    wrong = LayerSpectrum("v", np.array([3.0, 2.0, 1.0]), 1.0, 1.0, 10.0, 10.0, shape=(5, 8))  # 5 != 3 values
    for layers in ([layer], [wrong]):
        for name in ("vbmf", "gavish-donoho"):
            with pytest.raises(UserInputError):
                BASELINES[name](RankProblem(layers, 10.0, 10.0))


def test_pure_noise_gives_rank_one_floor():
    rng = np.random.default_rng(7)
    sigma = np.linalg.svd(rng.normal(size=(30, 45)), compute_uv=False)
    layer = LayerSpectrum("w", sigma, 1.0, 1.0, 300.0, 300.0, shape=(30, 45))
    p = RankProblem([layer], 1e9, 1e9)
    for name in ("vbmf", "gavish-donoho"):
        sel = BASELINES[name](p)
        assert sel.ranks.tolist() == [1] and sel.info["raw_ranks"] == [1] and sel.info["meets_budgets"]


def test_a_latency_problem_is_in_ms_and_says_so():
    from edgecomp.ranks.latency import latency_problem

    layer = LayerSpectrum("a", np.array([3.0, 2.0, 1.0]), 100.0, 10.0, original_compute=1000.0, original_params=100.0)
    macs = RankProblem([layer], 1e9, 1e9, fixed_compute=50.0)
    assert macs.compute_unit == "MACs"
    table = {"fixed_ms": 0.5, "layers": {"a": {"slope_ms": 0.2, "intercept_ms": 0.1, "original_ms": 1.0}}}
    latency = latency_problem(macs, table, budget_ms=0.6)
    assert latency.compute_unit == "ms" and latency.with_budgets(1.0, 1e9).compute_unit == "ms"
    assert latency.cost([1]) == pytest.approx((0.5 + 0.1 + 0.2, 10.0)) and latency.compute_budget == 0.6
    with pytest.raises(InfeasibleBudgetError, match=r"needs 0\.8 ms and 10 parameters, but the budgets are 0\.6 ms"):
        select_min_error(latency)
    sel = select_pos_greedy(latency.with_budgets(1.0, 1e9))
    assert sel.info["compute_unit"] == "ms" and sel.info["mac_budget"] == 1.0
