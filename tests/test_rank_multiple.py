"""Hardware-friendly ranks: rounding down to the runtime's rank multiple keeps every budget."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from edgecomp.cli import main
from edgecomp.errors import UserInputError
from edgecomp.factor.rank_rounding import (check_rank_multiple, resolve_rank_multiple, round_rank, round_ranks,
                                           round_selection)
from edgecomp.profiles import load_profile
from edgecomp.profiles.profile import DeviceProfile
from edgecomp.profiles.schema import validate_profile_data
from edgecomp.ranks import LayerSpectrum, RankProblem
from edgecomp.ranks.choices import ChoiceLayer
from edgecomp.ranks.problem import RankSelection


@pytest.mark.parametrize("rank, multiple, expected", [(23, 8, 16), (16, 8, 16), (7, 8, 7), (8, 8, 8), (95, 32, 64),
                                                      (5, 1, 5), (1, 4, 1)])
def test_a_rank_rounds_down_to_the_multiple_and_never_below_it(rank, multiple, expected):
    assert round_rank(rank, multiple) == expected


def test_bad_multiples_are_refused():
    with pytest.raises(ValueError):
        round_rank(8, 0)
    for bad in (0, -8, 2.5, True, "8"):
        with pytest.raises(UserInputError, match="--rank-multiple"):
            check_rank_multiple(bad)
    assert check_rank_multiple(None) is None and check_rank_multiple(np.int64(8)) == 8


def _layer(name: str, k: int, macs: float, params: float, be_scale: float = 1.0) -> LayerSpectrum:
    sigma = np.linspace(10, 1, k)
    return LayerSpectrum(name, sigma, macs, params, macs * k * be_scale, params * k * be_scale)


def test_rounding_keeps_every_budget_and_leaves_dense_layers_alone():
    rng = np.random.default_rng(0)
    layers = tuple(_layer(f"l{i}", int(k), float(rng.uniform(1, 5)), float(rng.uniform(1, 5)), 0.7)
                   for i, k in enumerate(rng.integers(20, 90, size=6)))
    ranks = np.array([int(rng.integers(1, layer.max_rank + 1)) for layer in layers])
    problem = RankProblem(layers, *problem_cost(layers, ranks))  # budgets met exactly by `ranks`
    assert problem.feasible(ranks)
    rounded, records = round_ranks(problem, ranks, 8)
    assert problem.feasible(rounded)
    for layer, before, after in zip(layers, ranks, rounded):
        if not layer.is_factored(int(before)):
            assert after == before  # dense: untouched
        else:
            assert after <= before and (after % 8 == 0 or after == before < 8) and layer.is_factored(int(after))
    assert {r.name for r in records} == {layer.name for layer, r in zip(layers, ranks) if layer.is_factored(int(r))}
    assert any(r.after != r.before for r in records)


def problem_cost(layers, ranks):
    costs = np.array([layer.cost(int(r)) for layer, r in zip(layers, ranks)])
    return costs[:, 0].sum(), costs[:, 1].sum()


def test_cobla_components_keep_their_largest_singular_values_and_scales():
    layer = _layer("a", 40, 1.0, 1.0)
    selection = RankSelection("cobla", [11], info={"x": 1})
    kept = np.array([9, 0, 3, 1, 2, 4, 5, 6, 7, 8, 12])  # not a prefix, not sorted
    scales = kept * 10.0  # one scale per kept component, aligned with `kept`
    new, components, new_scales = round_selection(RankProblem((layer,), math.inf, math.inf), selection, 8,
                                                  {"a": kept}, {"a": scales})
    assert new.ranks.tolist() == [8] and selection.ranks.tolist() == [11]  # the input is not changed
    assert components["a"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert new_scales["a"].tolist() == [0, 10, 20, 30, 40, 50, 60, 70]
    assert new.info["x"] == 1 and new.info["rank_rounding"] == {"multiple": 8, "layers": [
        {"name": "a", "before": 11, "after": 8}]}
    same, *_ = round_selection(RankProblem((layer,), math.inf, math.inf), selection, None)
    assert same is selection


def test_a_tucker2_choice_moves_to_the_best_aligned_pair_below_it():
    # choices: (4,4) (4,8) (8,8) (6,10) dense; cost grows with r1 and r2, error falls
    layer = ChoiceLayer("t", np.ones(5), 1.0, 1.0, 1000.0, 1000.0, r1s=[4, 4, 8, 6, 16], r2s=[4, 8, 8, 10, 16],
                        choice_compute=[16.0, 32.0, 64.0, 60.0, 1000.0], choice_params=[16.0, 32.0, 64.0, 60.0, 1000.0],
                        errors=[9.0, 6.0, 3.0, 4.0, 0.0], weight_energy=20.0)
    problem = RankProblem((layer,), 60.0, 60.0)
    ranks, records = round_ranks(problem, [4], 4)  # (6, 10) -> (4, 8): the aligned pair at or below (4, 8)
    assert layer.pair(int(ranks[0])) == (4, 8) and problem.feasible(ranks)
    assert records[0].to_dict() == {"name": "t", "before": [6, 10], "after": [4, 8]}
    kept, records = round_ranks(problem, [4], 3)  # no listed pair of multiples of 3 below (6, 9): kept, said so
    assert kept.tolist() == [4] and "kept" in records[0].note


def test_profiles_take_one_multiple_or_one_per_precision():
    data = load_profile("x86-host").to_dict()
    data["runtime"]["rank_multiple"] = 8
    validate_profile_data(data)
    assert DeviceProfile.from_dict(data).rank_multiples == {"fp32": 8, "int8": 8}
    data["runtime"]["rank_multiple"] = {"int8": 16}
    validate_profile_data(data)
    profile = DeviceProfile.from_dict(data)
    assert (profile.rank_multiple(), profile.rank_multiple("int8")) == (1, 16)
    validate_profile_data(profile.to_dict())  # round-trips
    assert DeviceProfile.from_dict(profile.to_dict()) == profile
    for bad, message in ((0, "is not valid"), ({"int8": 2.5}, "is not valid"), ({"fp16": 8}, "rank_multiple.fp16")):
        data["runtime"]["rank_multiple"] = bad
        with pytest.raises(UserInputError, match=message):
            validate_profile_data(data, "dev.yaml")
    assert "rank_multiple" not in load_profile("pizero2").to_dict()["runtime"]  # fingerprints unchanged
    assert load_profile("x86-host").to_dict()["runtime"]["rank_multiple"] == {"fp32": "simd"}


def test_the_override_beats_the_profile_which_beats_nothing():
    jetson = load_profile("jetson-orin-nano")
    assert resolve_rank_multiple(None, jetson, "fp16")[0] == 8
    assert resolve_rank_multiple(None, jetson, "int8")[0] == 32
    assert resolve_rank_multiple(None, jetson, "fp32") == (1, "none")
    assert resolve_rank_multiple(4, jetson, "fp16") == (4, "--rank-multiple 4")
    assert resolve_rank_multiple(1, jetson, "fp16")[0] == 1
    assert resolve_rank_multiple(None, None, None) == (1, "none")


def test_compress_rounds_the_built_model_and_reports_before_and_after(tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--method", "pos-cvx",
                                       "--rank-multiple", "4", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["within_budgets"] and report["rank_multiple"]["multiple"] == 4
    factored = [row for row in report["layers"] if row["factored"]]
    assert factored and all(row["rank"] % 4 == 0 or row["rank"] < 4 for row in factored)
    assert all(row["rank"] <= row["rank_before_rounding"] for row in factored)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["ranks"] == {row["name"]: row["rank"] for row in factored}
    same, _ = round_ranks(RankProblem((layer_of(8),), math.inf, math.inf), [6], 16)
    assert same.tolist() == [6]  # below the multiple: kept


def layer_of(k: int) -> LayerSpectrum:
    return _layer("x", k, 1.0, 1.0)


def test_cobla_ranks_are_rounded_before_the_model_is_built():
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import Budgets, compress
    from edgecomp.data import ArrayDataset
    from edgecomp.graph import analyze_model
    from edgecomp.models import get_zoo_model

    rng = np.random.default_rng(0)
    model = get_zoo_model("tiny_cnn")
    model = getattr(model, "module", model)
    data = ArrayDataset(rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64), name="random")
    shape = (1, 1, 28, 28)
    budget = 0.5 * analyze_model(model, shape, "spatial").total_macs
    result = compress(model, shape, Budgets(budget, math.inf, "fp32"), method="cobla", data=data,
                      cobla=CoblaOptions(max_iter=2, draws=2, sample=0.5), rank_multiple=4)
    records = result.selection.info["rank_rounding"]["layers"]
    assert result.macs <= budget and records and any(r["before"] != r["after"] for r in records)
    assert result.factored == {r["name"]: r["after"] for r in records}
    assert all(r % 4 == 0 or r < 4 for r in result.factored.values())
