"""Never slower, layer by layer: the latency break-even rank (edgecomp.ranks.latency)."""

from types import SimpleNamespace

import numpy as np
import pytest

from edgecomp.ranks import LayerSpectrum, RankProblem
from edgecomp.ranks.knapsack import select_min_error
from edgecomp.ranks.latency import (NOT_FASTER, apply_latency_break_even, latency_break_even_rank, latency_problem,
                                    layer_latency_rows)

SIGMA = np.linspace(8.0, 1.0, 8)


def layer(name: str) -> LayerSpectrum:
    # MACs break even at rank ceil(100 / 10) = 10 > max rank 8: factored is cheaper in MACs at every rank
    return LayerSpectrum(name, SIGMA, compute_per_rank=10, params_per_rank=5, original_compute=100, original_params=60)


def row(dense_ms: float, intercept_ms: float, slope_ms: float) -> dict:
    return {"original_ms": dense_ms, "intercept_ms": intercept_ms, "slope_ms": slope_ms, "ranks": [1, 4, 8],
            "max_rank": 8}


TABLE = {"fixed_ms": 0.5, "layers": {
    "slow": row(1.0, 0.9, 0.05),   # rank 1: 0.95 ms = 0.95 x dense: never measurably faster
    "fast": row(1.0, 0.2, 0.15),   # 0.2 + 0.15 r >= 0.95 from r = 5 on
}}


def problem(compute_budget: float = 150.0) -> RankProblem:
    return RankProblem((layer("slow"), layer("fast"), layer("unmeasured")), compute_budget, 1e9)


def test_the_break_even_rank_is_where_the_fit_stops_being_measurably_faster():
    assert latency_break_even_rank(TABLE["layers"]["fast"], 8) == 5
    assert latency_break_even_rank(TABLE["layers"]["slow"], 8) == 1
    assert latency_break_even_rank(row(1.0, 0.0, 1e-6), 8) == 9  # faster at every rank: no cap
    # the margin: 0.94 x dense is faster, 0.96 x dense is not
    assert NOT_FASTER == 0.95
    assert latency_break_even_rank(row(1.0, 0.9, 0.04), 8) == 2 and latency_break_even_rank(row(1.0, 0.9, 0.06), 8) == 1


def test_a_layer_slower_factored_stays_dense_and_budgets_still_hold():
    plain = problem()
    capped = apply_latency_break_even(plain, TABLE)
    slow, fast, unmeasured = capped.layers
    assert [l.break_even_rank for l in plain.layers] == [9, 9, 9]
    assert (slow.break_even_rank, fast.break_even_rank, fast.max_useful_rank) == (1, 5, 4)
    assert unmeasured is plain.layers[2]
    assert all(slow.cost(r) == (100.0, 60.0) and not slow.is_factored(r) for r in range(1, 9))
    assert fast.cost(4) == (40.0, 20.0) and fast.cost(5) == (100.0, 60.0)
    # rank 5 of `fast` was 50 MACs: now it is the dense layer's 100
    assert plain.feasible([1, 5, 1]) and not capped.feasible([1, 5, 1]) and capped.feasible([1, 4, 1])
    assert capped.min_cost == (100.0 + 10.0 + 10.0, 60.0 + 5.0 + 5.0)
    sel = select_min_error(capped)
    assert capped.feasible(sel.ranks) and not slow.is_factored(int(sel.ranks[0])) and 1 <= sel.ranks[1] <= 4
    assert apply_latency_break_even(capped, TABLE).layers[1].break_even_rank == 5  # applying twice changes nothing


def test_the_rule_only_lowers_a_break_even_rank():
    early = LayerSpectrum("fast", SIGMA, 10, 5, original_compute=30, original_params=60)  # MACs: dense from rank 3
    capped = apply_latency_break_even(RankProblem((early,), 1e9, 1e9), TABLE)
    assert capped.layers[0].break_even_rank == 3


def test_latency_and_mac_problems_agree_on_which_layers_are_factored():
    """The built model is checked in MACs: both problems must leave the same ranks dense."""
    macs = RankProblem((LayerSpectrum("fast", SIGMA, 10, 5, original_compute=30, original_params=60),), 1e9, 1e9)
    table = {"fixed_ms": 0.0, "layers": {"fast": row(1.0, 0.0, 0.01)}}  # faster factored at every rank
    timed = apply_latency_break_even(latency_problem(macs, table, budget_ms=10.0), table)
    capped = apply_latency_break_even(macs, table)
    for r in range(1, 9):
        assert timed.layers[0].is_factored(r) == capped.layers[0].is_factored(r)
    assert timed.layers[0].break_even_rank == 3 and timed.compute_unit == "ms"
    assert timed.with_budgets(5.0, 1e9).layers[0].break_even_rank == 3


def test_choice_layers_are_left_alone():
    from edgecomp.ranks.choices import ChoiceLayer

    tucker = ChoiceLayer("t", np.ones(3), 1.0, 1.0, 10.0, 10.0, r1s=[1, 2, 4], r2s=[1, 2, 4],
                         choice_compute=[2.0, 5.0, 10.0], choice_params=[2.0, 5.0, 10.0], errors=[2.0, 1.0, 0.0],
                         weight_energy=4.0)
    capped = apply_latency_break_even(RankProblem((tucker,), 1e9, 1e9), {"layers": {"t": row(1.0, 0.9, 0.05)}})
    assert capped.layers[0] is tucker


def test_layer_rows_say_dense_ms_factored_ms_and_why():
    rows = {r["name"]: r for r in layer_latency_rows(TABLE, {"slow": None, "fast": 4})}
    assert rows["slow"]["chosen"] == "dense" and rows["slow"]["factored_ms"] is None
    assert "never measurably faster" in rows["slow"]["why"] and rows["slow"]["latency_break_even_rank"] == 1
    fast = rows["fast"]
    assert (fast["chosen"], fast["rank"], fast["dense_ms"], fast["faster"]) == ("factored", 4, 1.0, True)
    assert fast["factored_ms"] == pytest.approx(0.8)
    late = layer_latency_rows(TABLE, {"fast": 6})[1]  # built without the rule
    assert late["chosen"] == "factored" and late["faster"] is False and "not measurably faster" in late["why"]


def test_the_export_plan_measures_and_applies_only_when_asked():
    from edgecomp.pipeline.rounds import latency_plan

    def plan(**fields):
        return latency_plan(SimpleNamespace(**{"cost": "macs", "scheme": "spatial", "never_slower": None,
                                               "latency_cache": True, **fields}))

    assert plan() == {"measure": False, "apply": False, "use_cache": True}  # today's default: untouched
    assert plan(cost="latency") == {"measure": True, "apply": True, "use_cache": True}
    assert plan(cost="latency", never_slower=False)["apply"] is False
    assert plan(never_slower=True)["measure"] is True
    assert plan(never_slower=True, scheme="tucker2")["measure"] is False  # no per-rank table for choices
    assert plan(cost="latency", latency_cache=False)["use_cache"] is False


def _lc_data(n: int = 64):
    import torch

    from edgecomp.data import ArrayDataset

    g = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), name="random")


def _tiny_table() -> dict:
    # conv1: slower factored at every rank; conv2: 0.1 + 0.02 r ms against 1 ms dense; fc: faster below rank 8
    return {"fixed_ms": 0.2, "layers": {"conv1": row(0.2, 0.25, 0.01), "conv2": row(1.0, 0.1, 0.02),
                                        "fc": row(0.05, 0.0, 0.005)}}


@pytest.mark.parametrize("budget_ms", [0.9, 0.6])
def test_lc_selects_under_a_latency_budget_and_the_never_slower_rule(budget_ms):
    """LC's C steps rebuild their problem every step: the latency budget and the never-slower rule must come
    along (edgecomp.ranks.problem.LinearBudget rows), not only the MAC and memory budgets."""
    from edgecomp.compression.methods import Budgets, LCOptions, compress
    from edgecomp.models import load_model

    net = load_model("zoo:tiny_cnn").module.eval()
    table = _tiny_table()
    result = compress(net, (1, 1, 28, 28), Budgets(float("inf"), float("inf"), "fp32"), method="lc",
                      data=_lc_data(), latency_table=table, latency_budget_ms=budget_ms, never_slower_table=table,
                      lc=LCOptions(n_mu=2, steps_per_mu=2))
    assert "conv1" not in result.factored  # never measurably faster: stays dense
    assert result.selection.info["predicted_latency_ms"] <= budget_ms + 1e-9
    assert "conv2" in result.factored


def test_lc_refuses_a_latency_budget_below_the_fastest_model():
    from edgecomp.compression.methods import Budgets, LCOptions, compress
    from edgecomp.errors import InfeasibleBudgetError
    from edgecomp.models import load_model

    net = load_model("zoo:tiny_cnn").module.eval()
    with pytest.raises(InfeasibleBudgetError, match="latency"):
        compress(net, (1, 1, 28, 28), Budgets(float("inf"), float("inf"), "fp32"), method="lc", data=_lc_data(),
                 latency_table=_tiny_table(), latency_budget_ms=0.3, lc=LCOptions(n_mu=1, steps_per_mu=1))


def test_cobla_under_a_latency_budget_survives_a_layer_never_faster_factored():
    """The shrink fixes a layer every heuristic keeps whole at all its masks; for a layer never faster factored
    that relaxed cost (intercept + slope x max_rank) is far above its dense time, so the relaxed problem looked
    infeasible under a budget the model can meet. COBLA now skips such a shrink (info["shrink"])."""
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import Budgets, compress
    from edgecomp.models import load_model

    net = load_model("zoo:tiny_cnn").module.eval()
    table = {"fixed_ms": 0.2, "layers": {"conv1": row(0.2, 0.25, 0.1), "conv2": row(1.0, 0.1, 0.02),
                                         "fc": row(0.05, 0.0, 0.005)}}
    result = compress(net, (1, 1, 28, 28), Budgets(float("inf"), float("inf"), "fp32"), method="cobla",
                      data=_lc_data(), latency_table=table, latency_budget_ms=0.6, never_slower_table=table,
                      cobla=CoblaOptions(max_iter=2, sample=0.5, draws=2, seed=0))
    assert "conv1" not in result.factored and "conv2" in result.factored
    assert result.selection.info["predicted_latency_ms"] <= 0.6 + 1e-9
    assert result.selection.info.get("shrink", "").startswith("skipped")
