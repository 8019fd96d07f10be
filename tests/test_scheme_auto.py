"""--scheme auto: each conv layer takes spatial, channel, cp or tucker2, whichever serves the budget best.
Decomposition, the per-layer choices (exact costs and errors, Pareto frontier of the union), every choice-based
method meeting both budgets on the built model, the per-layer scheme in the report, the recipe (save, reload
without pickle, older recipes) and the ONNX metadata, the refusals, the CLI."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgecomp.cli import main
from edgecomp.compression.methods import Budgets, compress
from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.compression.run import CompressRequest, compress_loaded, write_outdir
from edgecomp.errors import UserInputError
from edgecomp.exporters.metadata import RANKS, read_metadata
from edgecomp.exporters.onnx_export import export_onnx
from edgecomp.factor.build import factorize_model
from edgecomp.factor.cp_conv import CPConv2d
from edgecomp.factor.modules import FactoredConv2d, FactoredLinear
from edgecomp.factor.recipe import load_compressed, read_recipe, save_compressed
from edgecomp.factor.tucker_conv import Tucker2Conv2d
from edgecomp.graph import analyze_model
from edgecomp.models import LoadedModel, load_model
from edgecomp.ranks.choices import ChoiceLayer, _candidates_and_errors, select_choices_min_error
from edgecomp.ranks.knapsack import solve_layers

SHAPE = (1, 1, 28, 28)
METHODS = ("pos-cvx", "uniform", "pos-greedy", "cptv")


@pytest.fixture(scope="module")
def tiny():
    return load_model("zoo:tiny_cnn").module.eval()


@pytest.fixture(scope="module")
def tiny_spectra(tiny):
    cost = analyze_model(tiny, SHAPE, "auto")
    return cost, compute_spectra(tiny, cost)


def test_auto_decomposition_weighs_each_scheme_the_layer_can_take():
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.Conv2d(12, 8, (3, 1)), nn.Conv2d(8, 8, 1),
                        nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.Linear(8 * 4 * 10, 5))
    layers = {lc.name: lc for lc in analyze_model(net, (1, 3, 8, 12), "auto").layers}
    assert layers["0"].decomposition.scheme == "auto"
    assert [o.scheme for o in layers["0"].decomposition.options] == ["spatial", "channel", "cp", "tucker2"]
    assert [o.scheme for o in layers["1"].decomposition.options] == ["channel", "cp", "tucker2"]  # kx1: no spatial
    assert layers["2"].decomposition.scheme == "linear" and layers["5"].decomposition.scheme == "linear"
    assert layers["3"].decomposition is None and "depthwise" in layers["3"].skip_reason


def _build_one(net, name, entry, spectra):
    return analyze_model(factorize_model(net, {name: entry}, "auto", spectra=spectra), SHAPE, "auto")


def test_choices_have_exact_costs_and_errors_and_form_a_pareto_frontier(tiny, tiny_spectra):
    cost, spectra = tiny_spectra
    base = analyze_model(tiny, SHAPE, "auto")
    layer = spectra["conv2"].choices
    assert isinstance(layer, ChoiceLayer) and layer.mixed and layer.scheme(layer.max_rank) == "dense"
    assert {"spatial", "channel", "cp"} <= set(layer.choice_schemes.tolist())
    weight = tiny.conv2.weight.detach().double()
    energy = float((weight ** 2).sum())
    schemes = layer.choice_schemes[:-1]
    ends = {int(k) + 1 for s in set(schemes.tolist()) for k in np.flatnonzero(schemes == s)[[0, -1]]}
    for k in sorted(ends):  # each scheme's cheapest and costliest choice: the built model costs what it says
        scheme, entry = layer.scheme(k), layer.rank_entry(k)
        built = _build_one(tiny, "conv2", {"scheme": scheme, "rank": entry}, spectra)
        assert built.total_macs - base.total_macs + layer.original_compute == layer.choice_compute[k - 1]
        assert built.total_params - base.total_params + layer.original_params == layer.choice_params[k - 1]
        if scheme in ("spatial", "channel"):  # the SVD truncation is what gets built
            module = factorize_model(tiny, {"conv2": {"scheme": scheme, "rank": entry}}, "auto", spectra=spectra).conv2
            w_hat = _spatial_or_channel_kernel(module, scheme).double()
            assert float(((weight - w_hat) ** 2).sum()) / energy == pytest.approx(layer.relative_errors[k - 1],
                                                                                   rel=1e-6, abs=1e-9)
    # no choice dominates another; choice 1 is the cheapest in both costs
    c, p, e = layer.choice_compute, layer.choice_params, layer.relative_errors
    for i in range(layer.max_rank):
        dominated = (c <= c[i]) & (p <= p[i]) & (e <= e[i]) & ((c < c[i]) | (p < p[i]) | (e < e[i]))
        assert not dominated.any(), layer.rank_entry(i + 1)
    assert c[0] == c.min() and p[0] == p.min()


def _spatial_or_channel_kernel(module: FactoredConv2d, scheme: str) -> torch.Tensor:
    """The kernel a two-conv factored layer computes (first conv then second, no nonlinearity)."""
    first, second = module[0].weight.detach(), module[1].weight.detach()
    if scheme == "channel":
        return torch.einsum("fr,rcij->fcij", second[:, :, 0, 0], first)
    return torch.einsum("frj,rci->fcij", second[:, :, 0, :], first[:, :, :, 0])


def test_cp_choice_errors_are_those_of_the_kept_terms(tiny, tiny_spectra):
    from edgecomp.factor.cp import relative_error

    _, spectra = tiny_spectra
    layer, fit = spectra["conv2"].choices, spectra["conv2"].parts["cp"].cp
    kernel = tiny.conv2.weight.detach().double().numpy()
    for k in np.flatnonzero(layer.choice_schemes == "cp") + 1:
        r = layer.rank_entry(int(k))
        direct = relative_error(kernel, fit.weights[:r], [a[:, :r] for a in fit.factors]) ** 2
        assert layer.relative_errors[k - 1] == pytest.approx(direct, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_every_choice_method_meets_both_budgets_on_the_built_model(tiny, method):
    cost = analyze_model(tiny, SHAPE, "auto")
    budgets = Budgets(0.4 * cost.total_macs, 0.5 * cost.total_params * 4, "fp32")
    result = compress(tiny, SHAPE, budgets, method=method, scheme="auto")
    built = analyze_model(result.model, SHAPE, "auto")
    assert built.total_macs <= budgets.macs and built.total_params <= budgets.params
    assert (built.total_macs, built.total_params) == (result.macs, result.params)
    kinds = {"spatial": FactoredConv2d, "channel": FactoredConv2d, "cp": CPConv2d, "tucker2": Tucker2Conv2d,
             "linear": FactoredLinear}
    rows = {row["name"]: row for row in result.layers}
    assert result.factored
    for name, entry in result.factored.items():
        module = result.model.get_submodule(name)
        assert isinstance(module, kinds[entry["scheme"]]) and rows[name]["scheme"] == entry["scheme"]
        if entry["scheme"] in ("spatial", "channel"):
            assert module.scheme == entry["scheme"] and module.rank == entry["rank"]
    for name, row in rows.items():
        assert row["scheme"] in kinds or (row["scheme"] == "dense" and not row["factored"])


def test_knapsack_picks_across_schemes_no_worse_than_any_single_scheme(tiny, tiny_spectra):
    cost, spectra = tiny_spectra
    problem = build_problem(cost, spectra, 0.3 * cost.total_macs, float("inf"))
    auto = select_choices_min_error(problem, mip_rel_gap=0.0).info["relative_squared_error_sum"]
    for scheme in ("spatial", "channel", "tucker2"):
        single_cost = analyze_model(tiny, SHAPE, scheme)
        single = build_problem(single_cost, compute_spectra(tiny, single_cost), 0.3 * cost.total_macs, float("inf"))
        candidates, errors = _candidates_and_errors(single)
        _, sol = solve_layers(single, errors, candidates, maximize=False, mip_rel_gap=0.0)
        assert auto <= sol.objective + 1e-12, scheme


def test_outdir_round_trip_records_each_layers_scheme(tmp_path, tiny):
    loaded = LoadedModel(module=tiny, spec="zoo:tiny_cnn", input_shape=SHAPE, num_classes=10)
    req = CompressRequest(model="zoo:tiny_cnn", outdir=str(tmp_path / "a"), method="cptv", scheme="auto",
                          mac_budget="0.4", memory_budget="0.5", progress=False)
    done = compress_loaded(req, loaded, None, None, log=lambda _: None)
    report = write_outdir(req.outdir, done, log=lambda _: None)
    assert report["onnx"]["written"], report["onnx"]  # the exporter's numerical check passed
    recipe = read_recipe(tmp_path / "a")
    assert recipe["scheme"] == "auto" and recipe["ranks"] == done.result.factored
    assert all(set(v) == {"scheme", "rank"} for v in recipe["ranks"].values())
    meta = json.loads(read_metadata(tmp_path / "a" / "model.onnx")[RANKS])
    assert meta == recipe["ranks"]
    again = load_compressed(tmp_path / "a")  # a zoo spec: rebuilt without pickle or trust
    x = torch.rand(3, *SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(again.module(x), done.result.model.eval()(x))
    assert all("scheme" in row for row in report["layers"])


def test_every_scheme_builds_saves_reloads_and_exports(tmp_path, tiny):
    ranks = {"conv1": {"scheme": "cp", "rank": 3}, "conv2": {"scheme": "tucker2", "rank": [4, 6]},
             "fc": {"scheme": "linear", "rank": 5}}
    built = factorize_model(tiny, ranks, "auto").eval()
    assert isinstance(built.conv1, CPConv2d) and isinstance(built.conv2, Tucker2Conv2d)
    recipe = {"source": {"spec": "zoo:tiny_cnn"}, "scheme": "auto", "ranks": ranks, "input_shape": list(SHAPE)}
    save_compressed(tmp_path, built, recipe)
    again = load_compressed(tmp_path).module
    x = torch.rand(2, *SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(again(x), built(x))
    assert export_onnx(again, tmp_path / "m.onnx", SHAPE).relative_error <= 1e-4
    spatial = factorize_model(tiny, {"conv2": {"scheme": "spatial", "rank": 2}}, "auto")
    assert isinstance(spatial.conv2, FactoredConv2d) and spatial.conv2.scheme == "spatial"


@pytest.mark.parametrize("entry", [{"scheme": "tucker2", "rank": 3}, {"scheme": "cp", "rank": [2, 2]},
                                   {"scheme": "svd", "rank": 2}, {"scheme": "cp", "rank": 2, "x": 1}, {"rank": 2}])
def test_recipe_refuses_malformed_auto_entries_and_reads_older_ones(tmp_path, entry):
    def write(ranks, scheme):
        (tmp_path / "recipe.json").write_text(json.dumps({"source": {"spec": "zoo:tiny_cnn"}, "scheme": scheme,
                                                          "ranks": ranks, "input_shape": list(SHAPE)}))

    write({"conv1": entry}, "auto")
    with pytest.raises(UserInputError, match="malformed recipe"):
        read_recipe(tmp_path)
    write({"conv1": 2, "fc": 3}, "spatial")  # an older recipe
    assert read_recipe(tmp_path)["ranks"] == {"conv1": 2, "fc": 3}
    write({"conv1": [1, 2]}, "tucker2")
    assert read_recipe(tmp_path)["ranks"] == {"conv1": [1, 2]}


def test_build_refuses_a_scheme_the_layer_cannot_take(tiny):
    with pytest.raises(UserInputError, match="is factored by --scheme auto"):
        factorize_model(tiny, {"conv2": 3}, "auto")
    with pytest.raises(UserInputError, match="one of linear"):
        factorize_model(tiny, {"fc": {"scheme": "cp", "rank": 3}}, "auto")


@pytest.mark.parametrize("method", ["vbmf", "gavish-donoho"])
def test_other_methods_refuse_auto(tiny, method):
    with pytest.raises(UserInputError, match=r"does not support --scheme auto.*cobla.*lc.*pos-cvx"):
        compress(tiny, SHAPE, Budgets(1e9, 1e9, "fp32"), method=method, scheme="auto")


def test_latency_cost_refuses_auto():
    from edgecomp.compression.methods import check_scheme_method

    with pytest.raises(UserInputError, match="--cost latency is not implemented for --scheme auto"):
        check_scheme_method("auto", "pos-cvx", latency=True)


def test_cli_offers_scheme_auto(tmp_path):
    args = ["compress", "zoo:tiny_cnn", "--scheme", "auto", "--mac-budget", "0.5", "--memory-budget", "0.6",
            "--method", "pos-greedy", "-o", str(tmp_path / "cli"), "--json"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["scheme"] == "auto" and report["within_budgets"]
    assert all(row["scheme"] in ("spatial", "channel", "cp", "tucker2", "linear", "dense") for row in report["layers"])


def test_report_tables_name_each_layers_scheme(tiny):
    from edgecomp.pipeline.summary import markdown
    from edgecomp.report.facts import layer_rows
    from edgecomp.report.html import _layers

    cost = analyze_model(tiny, SHAPE, "auto")
    result = compress(tiny, SHAPE, Budgets(0.4 * cost.total_macs, 0.5 * cost.total_params * 4, "fp32"),
                      method="pos-cvx", scheme="auto")
    comp = {"method": "pos-cvx", "macs": result.macs, "params": result.params, "layers": result.layers}
    analysis = {"original_macs": cost.total_macs, "original_params": cost.total_params, "precision": "fp32",
                "original_memory_bytes": 4.0 * cost.total_params, "mac_budget": 1e9, "memory_budget": float("inf")}
    verify = {"gates": [], "latency": {"p50": 0.1}, "verdict": "PASS"}
    report = {"model": "zoo:tiny_cnn", "device": "cpu", "verdict": "PASS", "exit_code": 0, "measured_on": "host",
              "analysis": analysis, "rounds": [{"round": 1, "compress": comp, "verify": verify}], "notes": [],
              "final": {"round": 1, "compress": comp, "verify": verify, "export": {"artifact": "model.onnx"}}}
    md = markdown(report)
    assert "| layer | shape | scheme | rank / max |" in md
    html = _layers(layer_rows(report), report, None)
    assert "<th>Scheme</th>" in html
    for row in result.layers:
        if row["factored"]:
            shown = f"({row['r1']}, {row['r2']})" if row["scheme"] == "tucker2" else f"{row['rank']} / {row['max_rank']}"
            assert any(line.startswith(f"| {row['name']} |") and f"| {row['scheme']} |" in line and shown in line
                       for line in md.splitlines()), row
            assert f"<td>{row['scheme']}</td>" in html


def test_cobla_scores_every_auto_choice_by_its_reconstruction(tiny, tiny_spectra):
    """With F = 1 the Fisher score 1/2 sum F (W - W_hat)^2 of each choice is half the squared error the choice
    layer holds (SVD tail, CP top-r terms, HOSVD truncation): the reconstructions are the right ones for every
    scheme, and no choice is skipped."""
    from edgecomp.compression.choice_scores import _choice_scores, auto_reconstructions

    _, spectra = tiny_spectra
    for name in ("conv1", "conv2"):
        layer = spectra[name].choices
        assert len(set(layer.choice_schemes[:-1].tolist())) >= 2, name  # a mixed layer
        kernel = tiny.get_submodule(name).weight.detach().double().numpy()
        scores = _choice_scores(name, kernel, np.ones_like(kernel), layer, auto_reconstructions(spectra))
        np.testing.assert_allclose(scores, 0.5 * layer.errors, rtol=1e-6, atol=1e-9 * layer.weight_energy)


@pytest.mark.parametrize("method", ["cobla", "lc"])
def test_cobla_and_lc_choose_mixed_schemes_within_budgets(method):
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import LCOptions
    from edgecomp.data import load_dataset

    try:
        data = load_dataset("fashion-mnist:test")
    except Exception as exc:  # noqa: BLE001 - the Debian dataset package is missing
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc}")
    net = load_model("zoo:tiny_cnn").module.eval()
    cost = analyze_model(net, SHAPE, "auto")
    budgets = Budgets(0.5 * cost.total_macs, 0.5 * cost.total_params * 4, "fp32")
    result = compress(net, SHAPE, budgets, method=method, scheme="auto", data=data,
                      cobla=CoblaOptions(sample=0.02), lc=LCOptions(n_mu=2, steps_per_mu=5))
    built = analyze_model(result.model, SHAPE, "auto")
    assert built.total_macs <= budgets.macs and built.total_params <= budgets.params
    assert (built.total_macs, built.total_params) == (result.macs, result.params)
    assert result.selection.method == method and result.factored
    kinds = {"spatial": FactoredConv2d, "channel": FactoredConv2d, "cp": CPConv2d, "tucker2": Tucker2Conv2d,
             "linear": FactoredLinear}
    for name, entry in result.factored.items():
        assert isinstance(result.model.get_submodule(name), kinds[entry["scheme"]]), (name, entry)
    x = torch.randn(4, *SHAPE[1:], generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result.model(x)).all()


def test_lc_ranks_from_refuses_auto(tiny):
    from edgecomp.compression.methods import LCOptions

    with pytest.raises(UserInputError, match="--ranks-from does not apply to --scheme auto"):
        compress(tiny, SHAPE, Budgets(1e9, 1e9, "fp32"), method="lc", scheme="auto", data=object(),
                 lc=LCOptions(ranks_from="pos-cvx"))


@pytest.mark.parametrize("scheme", ["tucker2", "auto"])
def test_inspect_shows_choice_schemes_without_a_spectrum(scheme):
    out = CliRunner().invoke(main, ["inspect", "zoo:tiny_cnn", "--scheme", scheme, "--json"])
    assert out.exit_code == 0, out.output
    conv = next(row for row in json.loads(out.output)["layers"] if row["name"] == "conv2")
    assert conv["scheme"] == scheme and "rank_90_energy" not in conv
    if scheme == "auto":
        assert {"spatial", "tucker2"} <= set(conv["schemes"])


def test_cobla_keeps_the_allocation_with_the_lowest_heldout_loss(tiny, tiny_spectra):
    """The Fisher knapsack competes with three other knapsack allocations; the one kept has the lowest
    held-out loss of its model with W_hat substituted, and that loss is what the report says."""
    from edgecomp.compression.choice_candidates import heldout_loss, substituted
    from edgecomp.compression.choice_scores import auto_reconstructions, select_choices_by_scores
    from edgecomp.data import ArrayDataset

    cost, spectra = tiny_spectra
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.rand(96, *SHAPE[1:], generator=g), torch.randint(0, 10, (96,), generator=g),
                        name="random")
    problem = build_problem(cost, spectra, 0.4 * cost.total_macs, float("inf"))
    heldout = np.arange(64, 96)
    sel = select_choices_by_scores(problem, tiny, cost, spectra, data, indices=np.arange(64), sample=1.0,
                                   heldout=heldout)
    info = sel.info
    assert set(info["candidates"]) == {"fisher", "layer", "layer-sqrt", "error"}
    losses = {k: v["heldout_loss"] for k, v in info["candidates"].items()}
    assert losses[info["chosen_candidate"]] == min(losses.values())
    assert list(sel.ranks) == info["candidates"][info["chosen_candidate"]]["ranks"]
    schemes = {lc.name: lc.decomposition.scheme for lc in cost.decomposable}
    probe = substituted(tiny, problem, sel.ranks, spectra, schemes, auto_reconstructions(spectra))
    assert heldout_loss(probe, tiny, data, heldout) == pytest.approx(min(losses.values()), rel=1e-6)
    c, p = problem.cost(sel.ranks)
    assert c <= problem.compute_budget
