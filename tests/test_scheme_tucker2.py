"""--scheme tucker2 end to end: per-layer (r1, r2) choices in the exact knapsack (pos-cvx) and the other
budgeted baselines on choice layers (uniform, cptv, pos-greedy), both budgets met on the built model, knapsack
optimality by brute force, refused methods, OUTDIR round trip
(safetensors + recipe with [r1, r2], model.onnx), the Python API and the CLI."""

import itertools
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import edgecomp
from edgecomp.cli import main
from edgecomp.compression.methods import Budgets, compress
from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.compression.run import CompressRequest, compress_loaded, write_outdir
from edgecomp.errors import InfeasibleBudgetError, UserInputError
from edgecomp.factor.recipe import load_compressed
from edgecomp.factor.tucker_conv import Tucker2Conv2d
from edgecomp.graph import analyze_model
from edgecomp.models import LoadedModel
from edgecomp.ranks.choices import ChoiceLayer, select_choices_min_error

SHAPE = (1, 3, 16, 16)


def _cnn() -> nn.Module:
    """3 convs (one 1x1) and a Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(24, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


def test_tucker2_decomposition_and_fallbacks():
    net = nn.Sequential(_cnn(), nn.Unflatten(1, (10, 1, 1)), nn.Conv2d(10, 10, 3, padding=1, groups=10))
    cost = {lc.name: lc for lc in analyze_model(net, SHAPE, "tucker2").layers}
    assert cost["0.3"].decomposition.scheme == "tucker2"
    assert cost["0.5"].decomposition.scheme == "linear" and cost["0.9"].decomposition.scheme == "linear"
    assert cost["2"].decomposition is None and "depthwise" in cost["2"].skip_reason


@pytest.mark.parametrize("method", ["pos-cvx", "uniform", "cptv", "pos-greedy"])
def test_methods_meet_both_budgets_on_the_built_model(method):
    net = _cnn()
    cost = analyze_model(net, SHAPE, "tucker2")
    budgets = Budgets(0.5 * cost.total_macs, 0.6 * cost.total_params * 4, "fp32")
    result = compress(net, SHAPE, budgets, method=method, scheme="tucker2")
    built = analyze_model(result.model, SHAPE, "tucker2")
    assert built.total_macs <= budgets.macs and built.total_params <= budgets.params
    assert (built.total_macs, built.total_params) == (result.macs, result.params)
    tucker = {name: m for name, m in result.model.named_modules() if isinstance(m, Tucker2Conv2d)}
    assert tucker, "a 0.5 MAC budget must Tucker-2 factor a conv"
    rows = {row["name"]: row for row in result.layers}
    for name, module in tucker.items():
        row = rows[name]
        assert result.factored[name] == [row["r1"], row["r2"]] == [module.r1, module.r2]
        # HOOI is no worse than the HOSVD truncation the knapsack priced
        assert module.relative_error ** 2 <= row["relative_squared_error"] + 1e-9
        assert row["error"] > 0


def _two_layer_problem():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1)).eval()
    cost = analyze_model(net, (1, 4, 8, 8), "tucker2")
    return net, cost, compute_spectra(net, cost)


def test_knapsack_is_optimal_against_brute_force():
    _, cost, spectra = _two_layer_problem()
    for fraction in (0.3, 0.5, 0.8):
        problem = build_problem(cost, spectra, fraction * cost.total_macs, 0.7 * cost.total_params)
        layers = problem.layers
        assert all(isinstance(layer, ChoiceLayer) for layer in layers)
        best = min((sum(layer.errors[k - 1] / layer.weight_energy for layer, k in zip(layers, ks)), ks)
                   for ks in itertools.product(*(range(1, layer.max_rank + 1) for layer in layers))
                   if problem.feasible(ks))
        selection = select_choices_min_error(problem, mip_rel_gap=0.0)
        assert problem.feasible(selection.ranks)
        got = sum(layer.errors[k - 1] / layer.weight_energy for layer, k in zip(layers, selection.ranks))
        assert got == pytest.approx(best[0], rel=1e-9, abs=1e-12)


def test_infeasible_budget_gives_the_minimum_achievable():
    net, cost, spectra = _two_layer_problem()
    min_macs = build_problem(cost, spectra, float("inf"), float("inf")).min_cost[0]
    cheapest = sum(layer.choice_compute.min() for layer in build_problem(cost, spectra, 1, 1).layers)
    assert min_macs == cheapest
    with pytest.raises(InfeasibleBudgetError, match=f"{min_macs:,.0f}"):
        compress(net, (1, 4, 8, 8), Budgets(min_macs - 1, float("inf"), "fp32"), method="pos-cvx", scheme="tucker2")


@pytest.mark.parametrize("method", ["vbmf", "gavish-donoho"])
def test_other_methods_refuse_tucker2(method):
    with pytest.raises(UserInputError, match=r"bilinear in \(r1, r2\).*cobla.*lc.*pos-cvx.*uniform"):
        compress(_cnn(), SHAPE, Budgets(1e9, 1e9, "fp32"), method=method, scheme="tucker2")


def test_outdir_round_trip_and_onnx(tmp_path):
    net = _cnn()
    loaded = LoadedModel(module=net, spec="<test>", input_shape=SHAPE, num_classes=10)
    req = CompressRequest(model="<test>", outdir=str(tmp_path / "t2"), method="pos-cvx", scheme="tucker2",
                          mac_budget="0.5", progress=False)
    done = compress_loaded(req, loaded, None, None, log=lambda _: None)
    report = write_outdir(req.outdir, done, log=lambda _: None)
    assert report["onnx"]["written"], report["onnx"]
    assert (tmp_path / "t2" / "model.onnx").is_file()
    recipe = json.loads((tmp_path / "t2" / "recipe.json").read_text())
    assert recipe["scheme"] == "tucker2"
    assert any(isinstance(v, list) and len(v) == 2 for v in recipe["ranks"].values())
    again = load_compressed(tmp_path / "t2", source_module=_cnn())
    x = torch.rand(3, *SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(again.module(x), done.result.model.eval()(x))


def test_python_api_and_cli(tmp_path):
    result = edgecomp.compress(_cnn(), input_shape=SHAPE, mac_budget=0.5, method="uniform", scheme="tucker2",
                               progress=False)
    assert result.report["macs"] <= result.report["mac_budget"]
    assert any(isinstance(v, list) for v in result.ranks.values())
    args = ["compress", "zoo:tiny_cnn", "--scheme", "tucker2", "--mac-budget", "0.5", "--memory-budget", "0.7",
            "--method", "pos-cvx", "-o", str(tmp_path / "cli"), "--json"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["scheme"] == "tucker2" and report["within_budgets"]
    assert any(row.get("scheme") == "tucker2" and row["factored"] for row in report["layers"])
    refused = CliRunner().invoke(main, args[:-3] + ["--method", "vbmf", "-o", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "pos-cvx" in refused.output


@pytest.mark.parametrize("method", ["cobla", "lc"])
def test_cobla_and_lc_choose_tucker2_pairs_within_budgets(method):
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import LCOptions
    from edgecomp.data import load_dataset
    from edgecomp.graph import analyze_model
    from edgecomp.models import load_model

    try:
        data = load_dataset("fashion-mnist:test")
    except Exception as exc:  # noqa: BLE001 - the Debian dataset package is missing
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc}")
    net = load_model("zoo:tiny_cnn").module.eval()
    shape = (1, 1, 28, 28)
    cost = analyze_model(net, shape)
    budgets = Budgets(0.5 * cost.total_macs, 0.5 * cost.total_params * 4, "fp32")
    result = compress(net, shape, budgets, method=method, scheme="tucker2", data=data,
                      cobla=CoblaOptions(sample=0.02), lc=LCOptions(n_mu=2, steps_per_mu=5))
    assert result.macs <= budgets.macs and result.params <= budgets.params
    assert any(isinstance(v, list) and len(v) == 2 for v in result.ranks.values())  # a Tucker-2 (r1, r2) pair
    assert result.selection.method == method
