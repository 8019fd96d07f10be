"""compress: budgets hold on the built model, OUTDIR round-trips without pickle, infeasible budgets fail fast."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgecomp.cli import main
from edgecomp.compression.methods import Budgets, compress
from edgecomp.factor.recipe import load_compressed
from edgecomp.graph import analyze_model
from edgecomp.models import get_zoo_model


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=rng.random((96, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 96))
    return f"npz:{path}"


@pytest.mark.parametrize("method", ["uniform", "cptv", "pos-greedy", "pos-cvx"])
@pytest.mark.parametrize("scheme", ["spatial", "channel"])
def test_budgeted_methods_build_models_within_budget(method, scheme):
    torch.manual_seed(0)
    model = get_zoo_model("fmnist_cnn").eval()
    cost = analyze_model(model, (1, 1, 28, 28), scheme)
    budgets = Budgets(0.4 * cost.total_macs, 0.4 * cost.total_params * 4, "fp32")
    result = compress(model, (1, 1, 28, 28), budgets, method=method, scheme=scheme)
    built = analyze_model(result.model, (1, 1, 28, 28), scheme)
    assert built.total_macs <= budgets.macs and built.total_params <= budgets.params
    assert result.macs == built.total_macs
    assert result.factored, "a 0.4 budget must factor some layers"
    assert result.model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_cli_compress_writes_outdir_that_reloads(tmp_path, npz_data):
    out = tmp_path / "out"
    args = ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--memory-budget", "0.6", "--method", "pos-cvx",
            "--eval-data", npz_data, "-o", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("method", "scheme", "original_macs", "original_params", "macs", "params", "mac_budget", "memory_budget",
                "accuracy", "original_accuracy", "layers", "timings"):
        assert key in report
    assert report["macs"] <= report["mac_budget"]
    assert sorted(p.name for p in out.iterdir()) == [".edgecomp-manifest.json", "model.onnx", "model.safetensors",
                                                     "ranks.png", "recipe.json", "report.json"]
    loaded = load_compressed(out)
    x = torch.rand(3, 1, 28, 28)
    assert loaded.module(x).shape == (3, 10)
    assert analyze_model(loaded.module, (1, 1, 28, 28)).total_macs == report["macs"]


def test_infeasible_budget_exits_2_with_minimum(tmp_path):
    result = CliRunner().invoke(main, ["compress", "zoo:tiny_cnn", "--mac-budget", "10", "--method", "uniform", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "minimum achievable" in result.output
    assert not (tmp_path / "o").exists()


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    result = CliRunner().invoke(main, ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--method", "uniform", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "refusing" in result.output
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_vbmf_reports_budgets_without_enforcing(tmp_path):
    result = CliRunner().invoke(main, ["compress", "zoo:fmnist_cnn", "--mac-budget", "0.5", "--method", "vbmf", "-o", str(tmp_path / "v"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["budgets_enforced"] is False and isinstance(report["within_budgets"], bool)


def _labelled_data(n=256, seed=0):
    from edgecomp.data import ArrayDataset

    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > x[:, 0, 14:].mean(axis=(1, 2))).astype(np.int64)
    return ArrayDataset(x, y, name="synthetic", num_classes=10)


def test_cobla_end_to_end_is_feasible_and_deterministic():
    from edgecomp.compression.cobla import CoblaOptions

    torch.manual_seed(0)
    model = get_zoo_model("fmnist_cnn").eval()
    cost = analyze_model(model, (1, 1, 28, 28), "spatial")
    budgets = Budgets(0.5 * cost.total_macs, 0.5 * cost.total_params * 4, "fp32")
    data = _labelled_data()
    runs = []
    for _ in range(2):
        result = compress(model, (1, 1, 28, 28), budgets, method="cobla", scheme="spatial", data=data,
                          cobla=CoblaOptions(max_iter=4, sample=64, draws=4, seed=3))
        runs.append(result)
        assert result.macs <= budgets.macs and result.params <= budgets.params
        info = result.selection.info
        assert info["sqp_iterations"] >= 1 and info["gradient_samples"] == 64
    assert runs[0].ranks == runs[1].ranks


def test_cobla_without_data_is_a_clear_error():
    from edgecomp.errors import UserInputError

    model = get_zoo_model("tiny_cnn")
    with pytest.raises(UserInputError, match="--data"):
        compress(model, (1, 1, 28, 28), Budgets(1e9, 1e9, "fp32"), method="cobla")


@pytest.mark.parametrize("ranks_from", [None, "pos-cvx"])
def test_cli_lc_with_finetune_reports_curve_and_stays_in_budget(tmp_path, npz_data, ranks_from):
    out = tmp_path / "lc"
    args = ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--memory-budget", "0.5", "--method", "lc",
            "--data", npz_data, "--eval-data", npz_data, "--lc-n-mu", "2", "--lc-steps-per-mu", "3",
            "--finetune-epochs", "1", "--distill", "-o", str(out), "--json"]
    if ranks_from:
        args += ["--ranks-from", ranks_from]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "lc" and report["macs"] <= report["mac_budget"]
    assert report["params"] <= report["param_budget"]
    assert report["accuracy_before_finetune"] is not None
    assert report["finetune"]["mode"] == "distillation" and report["finetune"]["curve"]
    assert report["selection_info"]["lc_history"]
    assert load_compressed(out).module(torch.rand(1, 1, 28, 28)).shape == (1, 10)
