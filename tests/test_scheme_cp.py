"""--scheme cp end to end: CP costs, masked CP layers, every budgeted method within budget, refit report,
OUTDIR round trip (safetensors + recipe, and model.onnx) and the CLI with --cp-solver spals."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgecomp.cli import main
from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import Budgets, LCOptions, compress
from edgecomp.compression.run import CompressRequest, compress_loaded, write_outdir
from edgecomp.errors import UserInputError
from edgecomp.factor.cp_conv import CPConv2d, cp_costs
from edgecomp.factor.recipe import load_compressed
from edgecomp.graph import analyze_model
from edgecomp.models import LoadedModel, get_zoo_model

SHAPE = (1, 1, 28, 28)


def _data(n=96, seed=0):
    from edgecomp.data import ArrayDataset

    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > x[:, 0, 14:].mean(axis=(1, 2))).astype(np.int64)
    return ArrayDataset(x, y, name="synthetic", num_classes=10)


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=rng.random((64, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 64))
    return f"npz:{path}"


def test_cp_decomposition_costs_and_largest_rank():
    net = nn.Sequential(nn.Conv2d(3, 12, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(12, 6, 1), nn.Conv2d(6, 6, 3, groups=6))
    cost = analyze_model(net, (1, 3, 17, 15), "cp")
    layers = {lc.name: lc for lc in cost.layers}
    dec = layers["0"].decomposition
    macs, params = cp_costs(12, 3, 3, 3, 17, 15, 2, 1, 1)
    assert (dec.scheme, dec.macs_per_rank, dec.params_per_rank) == ("cp", macs, params)
    # the largest rank is the break-even rank: one more term would cost no less than the dense conv
    assert dec.max_rank == dec.break_even_rank
    assert (dec.max_rank - 1) * macs < dec.original_macs and (dec.max_rank - 1) * params < 12 * 27
    assert dec.max_rank * macs >= dec.original_macs or dec.max_rank * params >= 12 * 27
    assert layers["2"].decomposition.scheme == "linear"  # 1x1 convs fall back to the SVD
    assert layers["3"].decomposition is None and "depthwise" in layers["3"].skip_reason


def test_masked_cp_layer_is_the_kept_terms_and_the_original_at_full_masks():
    from edgecomp.compression.masked import masked_model
    from edgecomp.compression.problem import compute_spectra

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 3)).eval()
    cost = analyze_model(net, (1, 4, 6, 6), "cp")
    spectra = compute_spectra(net, cost)
    masked, masks = masked_model(net, cost, spectra, ["0"])
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(masked(x), net(x), atol=1e-5)  # all masks 1: left unfactored
    fit = spectra["0"].cp
    k = fit.rank
    masks.value = torch.zeros(k)
    masks.value[:3] = 1.0
    kept = type(fit)(fit.weights[:3], [a[:, :3] for a in fit.factors], [], 0.0, 0, 0.0, "kept", True)
    expected = nn.Sequential(CPConv2d(net[0], kept), *net[1:])
    assert torch.allclose(masked(x), expected(x), atol=1e-4)
    masks.value.requires_grad_(True)
    masked(x).sum().backward()
    assert masks.value.grad is not None and masks.value.grad.abs().sum() > 0


def _compress_dir(tmp_path, method: str, **options):
    torch.manual_seed(0)
    module = get_zoo_model("tiny_cnn").eval()
    loaded = LoadedModel(module=module, spec="zoo:tiny_cnn", input_shape=SHAPE, num_classes=10)
    req = CompressRequest(model="zoo:tiny_cnn", outdir=str(tmp_path / method), method=method, scheme="cp",
                          mac_budget="0.5", memory_budget="0.5", progress=False, **options)
    done = compress_loaded(req, loaded, _data(), None, log=lambda _: None)
    report = write_outdir(req.outdir, done, log=lambda _: None)
    return module, done.result, report


@pytest.mark.parametrize("method, options", [
    ("cobla", {"cobla": CoblaOptions(max_iter=3, sample=32, draws=4, seed=0)}),
    ("pos-cvx", {}),
    ("uniform", {}),
    pytest.param("lc", {"lc": LCOptions(n_mu=2, steps_per_mu=2)},
                 marks=pytest.mark.filterwarnings("ignore:LC.*grew:UserWarning")),
])
def test_cp_methods_meet_budgets_refit_and_round_trip(tmp_path, method, options):
    original, result, report = _compress_dir(tmp_path, method, **options)
    built = analyze_model(result.model, SHAPE, "cp")
    assert report["within_budgets"] and report["macs"] <= report["mac_budget"]
    assert report["params"] <= report["param_budget"]
    assert (built.total_macs, built.total_params) == (report["macs"], report["params"])
    cp_layers = [m for m in result.model.modules() if isinstance(m, CPConv2d)]
    assert cp_layers, "a 0.5 MAC budget must CP-factor a conv"
    refits = [row["cp_refit"] for row in report["layers"] if "cp_refit" in row]
    assert len(refits) == len(cp_layers)
    for refit in refits:  # ALS from the kept terms never loses fit
        assert refit["error_after"] <= refit["error_before"] + 1e-9 and refit["fit_after"] >= refit["fit_before"] - 1e-9
    assert report["onnx"]["written"], report["onnx"]
    recipe = json.loads((tmp_path / method / "recipe.json").read_text())
    assert recipe["scheme"] == "cp"
    loaded = load_compressed(tmp_path / method)
    x = torch.rand(3, *SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(loaded.module(x), result.model.eval()(x))
    assert any(isinstance(m, CPConv2d) for m in loaded.module.modules())


def test_reported_methods_refuse_cp():
    model = get_zoo_model("tiny_cnn").eval()
    with pytest.raises(UserInputError, match="singular values"):
        compress(model, SHAPE, Budgets(1e9, 1e9, "fp32"), method="vbmf", scheme="cp")


def test_cli_compress_cp_with_spals(tmp_path, npz_data):
    out = tmp_path / "spals"
    args = ["compress", "zoo:tiny_cnn", "--scheme", "cp", "--cp-solver", "spals", "--mac-budget", "0.5",
            "--method", "pos-cvx", "--eval-data", npz_data, "-o", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scheme"] == "cp" and report["cp_solver"] == "spals"
    assert report["macs"] <= report["mac_budget"]
    assert any("cp_refit" in row for row in report["layers"])
