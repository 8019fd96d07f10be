"""The budgeted baselines on choice layers (edgecomp.ranks.baselines.on_choices, edgecomp.ranks.choices):
pos-greedy, cptv and the cost-fraction uniform checked against direct implementations of their definitions on
seeded synthetic problems that mix ChoiceLayers and SVD layers; the Pareto pruning against brute force."""

import numpy as np
import pytest

from edgecomp.errors import InfeasibleBudgetError, UserInputError
from edgecomp.ranks.baselines import BASELINES
from edgecomp.ranks.baselines.on_choices import (descent_path, select_choices_cptv, select_choices_pos_greedy,
                                                 select_choices_uniform_cost, threshold_picks)
from edgecomp.ranks.choices import ChoiceLayer, layer_options, normalised_costs, pareto_front, problem_options
from edgecomp.ranks.problem import LayerSpectrum, RankProblem

SCHEMES = np.array(["spatial", "channel", "cp", "tucker2"])


def _choice_layer(rng, name: str, n: int) -> ChoiceLayer:
    """n factored choices on a frontier-like cloud (choice 1 cheapest in both) and the dense layer."""
    compute = np.sort(rng.integers(100, 900, n)).astype(float)
    compute[0] = 50.0
    params = rng.integers(20, 400, n).astype(float)
    params[0] = 10.0
    errors = np.sort(rng.random(n))[::-1] * 0.9 + 0.05 * rng.random(n)
    energy = 4.0
    schemes = np.append(rng.choice(SCHEMES, n), "dense")
    tucker = schemes[:-1] == "tucker2"
    r1s = np.append(np.where(tucker, rng.integers(1, 8, n), 0), 8)
    r2s = np.append(np.where(tucker, rng.integers(1, 8, n), 0), 8)
    ranks = np.append(np.where(tucker, 0, rng.integers(1, 8, n)), 0)
    return ChoiceLayer(name=name, sigma=np.ones(n + 1), compute_per_rank=1.0, params_per_rank=1.0,
                       original_compute=1000.0, original_params=500.0, shape=(8, 8), r1s=r1s, r2s=r2s,
                       choice_compute=np.append(compute, 1000.0), choice_params=np.append(params, 500.0),
                       errors=np.append(errors * energy, 0.0), weight_energy=energy, choice_schemes=schemes,
                       choice_ranks=ranks)


def _problem(seed: int, compute_frac: float, params_frac: float) -> RankProblem:
    rng = np.random.default_rng(seed)
    layers = [_choice_layer(rng, f"conv{i}", int(rng.integers(3, 7))) for i in range(3)]
    sigma = np.sort(rng.random(6))[::-1] + 0.1
    layers.append(LayerSpectrum("fc", sigma, 30.0, 12.0, 160.0, 72.0, bias_params=2.0, shape=(6, 6)))
    full = RankProblem(layers, np.inf, np.inf, fixed_compute=40.0, fixed_params=20.0)
    compute, params = full.original_cost
    return full.with_budgets(compute_frac * compute, params_frac * params)


BUDGETS = [(0.5, 0.6), (0.3, 1.0), (1.0, 0.25), (0.2, 0.2), (0.9, 0.9)]


def _direct_threshold(problem, key_of, pref_of, best_first):
    """The largest-t definition evaluated literally: for each t, each layer's best allowed option."""
    options = problem_options(problem)
    keys = [key_of(i, o) for i, o in enumerate(options)]
    prefs = [pref_of(i, o) for i, o in enumerate(options)]
    for t in sorted(set(np.concatenate(keys).tolist()), reverse=not best_first):
        ranks = []
        for k, p, o in zip(keys, prefs, options):
            allowed = [j for j in range(k.size) if k[j] <= t]
            pick = min(allowed, key=lambda j: (p[j], k[j], j)) if allowed else int(np.argmin(k))
            ranks.append(int(o.ids[pick]))
        if problem.feasible(ranks):
            return t, ranks
    raise AssertionError("nothing fits")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", BUDGETS)
def test_cptv_is_the_largest_feasible_energy_threshold(seed, budget):
    problem = _problem(seed, *budget)
    costs = normalised_costs(problem, problem_options(problem))
    t, ranks = _direct_threshold(problem, lambda i, o: -o.energy, lambda i, o: costs[i], best_first=True)
    got = select_choices_cptv(problem)
    assert problem.feasible(got.ranks) and got.ranks.tolist() == ranks and got.info["beta"] == pytest.approx(-t)
    # every layer keeps at least beta of its energy
    for o, r in zip(problem_options(problem), got.ranks):
        assert o.energy[list(o.ids).index(r)] >= got.info["beta"] - 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", BUDGETS)
def test_uniform_cost_is_the_largest_feasible_cost_fraction(seed, budget):
    problem = _problem(seed, *budget)
    dense = [(layer.original_compute, layer.original_params) for layer in problem.layers]

    def need(i, o):
        return np.maximum(o.compute / dense[i][0], o.params / dense[i][1])

    t, ranks = _direct_threshold(problem, need, lambda i, o: o.errors, best_first=False)
    got = select_choices_uniform_cost(problem)
    assert problem.feasible(got.ranks) and got.ranks.tolist() == ranks and got.info["alpha"] == pytest.approx(t)
    assert BASELINES["uniform"](problem).ranks.tolist() == ranks  # a mixed problem dispatches here


def _direct_greedy(problem):
    """pos-greedy on choice layers as its docstring states it: every step rescans every layer (no heap)."""
    options = problem_options(problem)
    current = [o.ids.size - 1 for o in options]
    budgets = (problem.compute_budget, problem.param_budget)
    while True:
        totals = problem.cost([o.ids[k] for o, k in zip(options, current)])
        over = [t > b * (1 + 1e-12) for t, b in zip(totals, budgets)]
        if not any(over):
            return [int(o.ids[k]) for o, k in zip(options, current)]
        costs = normalised_costs(problem, options, (float(over[0]), float(over[1])))
        best = None
        for i, (s, o) in enumerate(zip(costs, options)):
            here = current[i]

            def breaks(j):  # a budget that holds now would not after the move
                return any(not ov and t - c[here] + c[j] > b * (1 + 1e-12)
                           for ov, t, c, b in zip(over, totals, (o.compute, o.params), budgets))

            below = [j for j in descent_path(s, o.errors) if s[j] < s[here] and not breaks(j)]
            if not below and s[0] < s[here]:
                below = [0]
            for j in below:  # the least ratio; the nearest of ties; then the lowest layer
                score = max(o.errors[j] - o.errors[here], 0.0) / (s[here] - s[j])
                if best is None or score < best[0]:
                    best = (score, i, j)
        current[best[1]] = best[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", BUDGETS)
def test_pos_greedy_follows_its_definition_and_meets_the_budgets(seed, budget):
    problem = _problem(seed, *budget)
    got = select_choices_pos_greedy(problem)
    assert problem.feasible(got.ranks) and got.ranks.tolist() == _direct_greedy(problem)
    assert BASELINES["pos-greedy"](problem).ranks.tolist() == got.ranks.tolist()
    exact = BASELINES["pos-cvx"](problem.with_budgets(problem.compute_budget, problem.param_budget))
    assert exact.info["relative_squared_error_sum"] <= got.info["relative_squared_error_sum"] + 1e-12


def test_loose_budgets_keep_every_layer_whole_and_tight_ones_are_refused():
    problem = _problem(3, 1.0, 1.0)
    for method in ("pos-greedy", "cptv", "uniform", "pos-cvx"):
        ranks = BASELINES[method](problem).ranks
        assert all(not layer.is_factored(int(r)) for layer, r in zip(problem.layers, ranks)), method
    low = problem.with_budgets(problem.min_cost[0] - 1, np.inf)
    for method in ("pos-greedy", "cptv", "uniform", "pos-cvx"):
        with pytest.raises(InfeasibleBudgetError):
            BASELINES[method](low)


def test_spectrum_only_selectors_refuse_choice_layers():
    for method in ("vbmf", "gavish-donoho"):
        with pytest.raises(UserInputError, match="explicit choices"):
            BASELINES[method](_problem(0, 0.5, 0.5))


def test_threshold_picks_and_descent_path_against_loops():
    rng = np.random.default_rng(5)
    key, pref = rng.integers(0, 6, 12).astype(float), rng.integers(0, 4, 12).astype(float)
    thresholds = np.arange(-1, 7, dtype=float)
    got = threshold_picks(key, pref, thresholds)
    for t, g in zip(thresholds, got):
        allowed = [j for j in range(12) if key[j] <= t]
        want = min(allowed, key=lambda j: (pref[j], key[j], j)) if allowed else min(range(12), key=lambda j: (key[j], j))
        assert pref[g] == pref[want] and key[g] == key[want]
    s, e = rng.random(10), rng.random(10)
    path = descent_path(s, e)
    assert np.all(np.diff(s[path]) < 0) and np.all(np.diff(e[path]) > 0)
    for j in set(range(10)) - set(path.tolist()):  # everything left out is beaten in (s, e)
        assert any(s[k] <= s[j] and e[k] <= e[j] for k in path)


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(7)
    pts = rng.integers(0, 5, (60, 3)).astype(float)  # many ties and duplicates
    front = pareto_front(*pts.T)
    for i, p in enumerate(pts):
        dominated = any(np.all(q <= p) and np.any(q < p) for q in pts)
        first_of_equals = all(not np.all(q == p) for q in pts[:i])
        assert (i in front) == (not dominated and first_of_equals)
    assert [tuple(pts[i]) for i in front] == sorted(tuple(pts[i]) for i in front)


def test_layer_options_of_an_svd_layer_are_its_ranks_with_relative_tails():
    layer = LayerSpectrum("fc", np.array([3.0, 2.0, 1.0]), 10.0, 4.0, 100.0, 50.0, shape=(3, 5))
    o = layer_options(layer)
    assert o.ids.tolist() == list(range(1, layer.break_even_rank)) + ([3] if layer.break_even_rank <= 3 else [])
    assert o.errors[0] == pytest.approx(5.0 / 14.0) and o.errors[-1] == 0.0
    assert np.all(np.diff(o.compute) > 0)
