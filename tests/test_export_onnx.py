"""ONNX export: BN folding, factored graphs, numerical verification, atomic writes, user-file checks, CLI."""

from __future__ import annotations

import copy
import functools
import json
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgecomp.errors import MissingDependencyError, UserInputError, VerificationError
from edgecomp.exporters import export_onnx, fold_batchnorm, load_onnx_checked, read_metadata
from edgecomp.exporters.lowering import averaging_matrix, lower_adaptive_pools
from edgecomp.exporters.verify import cpu_session

FMNIST_SHAPE = (1, 1, 28, 28)
TINY = ("convert", "zoo:tiny_cnn")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one intra-op thread is as fast and immune to oversubscribed CI hosts."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
ALLOWED_OPS = {
    *("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "GlobalAveragePool", "AveragePool"),
    *("Flatten", "Reshape", "Constant", "Sub", "Div"),  # Sub/Div: the zoo models' input normalisation
}


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics so folding changes the weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def _fmnist_cnn() -> nn.Module:
    from edgecomp.models import load_model

    return _randomize_bn(load_model("zoo:fmnist_cnn").module)


@functools.lru_cache(maxsize=None)
def _factored_once(scheme: str) -> nn.Module:
    from edgecomp.factor import factorize_model

    ranks = {"features.1.0": 8, "features.3.0": 16, "classifier.1": 32}
    return factorize_model(_fmnist_cnn(), ranks, scheme)


def _factored(scheme: str) -> nn.Module:
    """The reference CNN with two convs and a Linear factored (SVD computed once per scheme)."""
    return copy.deepcopy(_factored_once(scheme))


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return tuple(onnx.helper.get_attribute_value(a))
    return None


class Branchy(nn.Module):
    """Data-dependent control flow: not fx-traceable, so folding falls back to Sequential adjacency."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())

    def forward(self, x):
        if x.sum() > 1e9:  # never taken; only makes symbolic tracing impossible
            return x
        return self.body(x)


# --- BatchNorm folding ---------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [_fmnist_cnn, Branchy])
def test_fold_batchnorm_is_exact_and_removes_bn(factory):
    model = _randomize_bn(factory()).eval()
    sample = (1, 28, 28) if factory is _fmnist_cnn else (3, 8, 8)
    x = torch.randn(4, *sample, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert folded == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)


def test_bn_after_shared_conv_output_is_not_folded():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second use of y

    model = _randomize_bn(Shared()).eval()
    assert fold_batchnorm(model) == 0
    assert isinstance(model.bn, nn.BatchNorm2d)


# --- export of factored models -------------------------------------------------------------------


@pytest.mark.parametrize("scheme, kernels", [("spatial", [(3, 1), (1, 3)]), ("channel", [(3, 3), (1, 1)])])
def test_factored_model_exports_to_plain_conv_graph(tmp_path, scheme, kernels):
    model = _factored(scheme)
    meta = {"edgecomp.scheme": scheme, "edgecomp.ranks": json.dumps({"features.1.0": 8})}
    result = export_onnx(model, tmp_path / "f.onnx", FMNIST_SHAPE, metadata=meta)

    graph = onnx.load(str(result.path)).graph
    ops = [n.op_type for n in graph.node]
    assert set(ops) <= ALLOWED_OPS, set(ops) - ALLOWED_OPS
    assert "BatchNormalization" not in ops and "Mul" not in ops
    # 4 convs, two of them factored into 2 convs each -> 6; Linear(factored) + Linear -> 3 Gemm/MatMul.
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 6 == result.node_counts["Conv"]
    assert ops.count("Gemm") + ops.count("MatMul") == 3
    # Graph order: features.0 (3x3), factored features.1, factored features.3, features.5 (3x3).
    assert [_attr(n, "kernel_shape") for n in convs] == [(3, 3), *kernels, *kernels, (3, 3)]
    assert result.folded_batchnorms == 4
    assert result.relative_error <= 1e-4 and result.max_abs_error < 1e-3
    assert graph.input[0].name == "input" and graph.output[0].name == "output"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    stored = read_metadata(result.path)
    assert stored["edgecomp.scheme"] == scheme
    assert json.loads(stored["edgecomp.ranks"]) == {"features.1.0": 8}
    assert json.loads(stored["edgecomp.input_shape"]) == list(FMNIST_SHAPE)
    assert "edgecomp.version" in stored

    # The dynamic batch axis really works in onnxruntime, and matches PyTorch.
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    (out,) = cpu_session(result.path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model.eval()(x).numpy(), rtol=1e-3, atol=1e-4)


def test_export_leaves_callers_model_untouched(tmp_path):
    model = _fmnist_cnn().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", FMNIST_SHAPE)
    assert model.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_fixed_batch_and_check_inputs(tmp_path):
    model = _fmnist_cnn()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    result = export_onnx(model, tmp_path / "fixed.onnx", (3, 1, 28, 28), dynamic_batch=False, check_inputs=x)
    dims = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 1, 28, 28]
    assert result.check_batch == 3 and not result.dynamic_batch
    with pytest.raises(UserInputError, match="fixed batch"):
        export_onnx(model, tmp_path / "bad.onnx", (3, 1, 28, 28), dynamic_batch=False, check_inputs=x[:2])
    with pytest.raises(UserInputError, match="check_inputs"):
        export_onnx(model, tmp_path / "bad.onnx", FMNIST_SHAPE, check_inputs=torch.rand(2, 3, 28, 28))
    assert not (tmp_path / "bad.onnx").exists()


def test_failed_verification_keeps_nothing_and_old_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous artifact")
    with pytest.raises(VerificationError, match="relative error") as info:
        # Folded BN weights differ from the unfolded model by float rounding (> 0), so 1e-15 must fail.
        export_onnx(_fmnist_cnn(), target, FMNIST_SHAPE, tolerance=1e-15)
    assert info.value.exit_code == 2
    assert target.read_bytes() == b"previous artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="input_shape"):
        export_onnx(_fmnist_cnn(), tmp_path / "m.onnx", (1, 0, 28, 28))
    with pytest.raises(UserInputError, match="outputs"):
        export_onnx(_fmnist_cnn(), tmp_path / "m.onnx", FMNIST_SHAPE, output_names=("a", "b"))
    with pytest.raises(UserInputError, match="check_inputs"):
        export_onnx(nn.Conv2d(3, 4, 3), tmp_path / "m.onnx", (1, 3, 8, 8), check_inputs=torch.rand(2, 5, 8, 8))
    with pytest.raises(UserInputError, match="cannot run on inputs of shape"):  # e.g. a wrong --input-shape
        export_onnx(nn.Conv2d(3, 4, 3), tmp_path / "m.onnx", (1, 1, 8, 8))
    assert not any(tmp_path.iterdir())


# --- simplification ------------------------------------------------------------------------------


def test_simplify_is_verified(tmp_path):
    plain = export_onnx(_factored("spatial"), tmp_path / "plain.onnx", FMNIST_SHAPE)
    slim = export_onnx(_factored("spatial"), tmp_path / "slim.onnx", FMNIST_SHAPE, simplify=True)
    assert slim.simplified and slim.relative_error <= 1e-4
    assert sum(slim.node_counts.values()) <= sum(plain.node_counts.values())
    assert slim.node_counts["Conv"] == 6
    assert read_metadata(slim.path)["edgecomp.input_shape"] == "[1, 1, 28, 28]"


def test_simplify_without_onnxslim_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # makes `import onnxslim` raise ImportError
    with pytest.raises(MissingDependencyError, match=r'edgecomp\[simplify\]'):
        export_onnx(_fmnist_cnn(), tmp_path / "m.onnx", FMNIST_SHAPE, simplify=True)
    assert not (tmp_path / "m.onnx").exists()


# --- adaptive pools the TorchScript exporter cannot express --------------------------------------


@pytest.mark.parametrize("in_size, out_size", [(7, 4), (5, 3), (6, 6), (9, 2)])
def test_averaging_matrix_matches_adaptive_avg_pool(in_size, out_size):
    x = torch.randn(2, 3, in_size, in_size + 1, generator=torch.Generator().manual_seed(0))
    expected = nn.functional.adaptive_avg_pool2d(x, (out_size, out_size - 1 if out_size > 1 else 1))
    rows = averaging_matrix(in_size, out_size)
    cols = averaging_matrix(in_size + 1, expected.shape[-1])
    torch.testing.assert_close(rows @ x @ cols.t(), expected)


def test_tiny_cnn_with_non_dividing_pool_exports(tmp_path):
    from edgecomp.models import load_model

    model = load_model("zoo:tiny_cnn").module  # AdaptiveAvgPool2d(4) on a 7x7 map
    copy = load_model("zoo:tiny_cnn").module
    assert lower_adaptive_pools(copy, torch.rand(FMNIST_SHAPE)) == 1
    result = export_onnx(model, tmp_path / "tiny.onnx", FMNIST_SHAPE)
    assert result.node_counts["MatMul"] == 2 and result.relative_error <= 1e-4
    assert any("AdaptiveAvgPool2d" in note for note in result.notes)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)  # the caller's model keeps its layer


# --- user-given ONNX files -----------------------------------------------------------------------


def test_load_onnx_checked_accepts_valid_and_rejects_bad_files(tmp_path):
    good = export_onnx(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), tmp_path / "good.onnx", (1, 1, 6, 6)).path
    assert load_onnx_checked(good).graph.node

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:-40])
    broken = onnx.load(str(good))
    broken.graph.node[0].input[0] = "no_such_tensor"
    dangling = tmp_path / "dangling.onnx"
    onnx.save(broken, str(dangling))

    for path in (garbage, empty, truncated, dangling, tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(UserInputError) as info:
            load_onnx_checked(path)
        assert str(path) in str(info.value)


# --- CLI -----------------------------------------------------------------------------------------


def _cli():
    """The real `edgecomp` group: its error handling (one `error:` line, exit code 2) is part of what is tested."""
    from edgecomp.cli import main

    return main


def test_cli_convert_model_spec_to_onnx_json(tmp_path):
    out = tmp_path / "exp" / "net.onnx"
    result = CliRunner().invoke(_cli(), ["convert", "zoo:fmnist_cnn", "--format", "onnx", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["artifact"] == str(out) and out.is_file()
    assert report["size_bytes"] == out.stat().st_size
    assert report["onnx"]["relative_error"] <= 1e-4
    assert report["onnx"]["node_counts"]["Conv"] == 4 and "BatchNormalization" not in report["onnx"]["node_counts"]
    assert read_metadata(out)["edgecomp.source_model"] == "zoo:fmnist_cnn"


def test_cli_convert_compress_outdir(tmp_path):
    from edgecomp.factor import factorize_model, save_compressed

    ranks = {"features.1.0": 8, "classifier.1": 32}
    outdir = tmp_path / "compressed"
    recipe = {
        "source": {"spec": "zoo:fmnist_cnn", "weights": None},
        "input_shape": list(FMNIST_SHAPE),
        "scheme": "spatial",
        "ranks": ranks,
        "device": "jetson-nano",
    }
    save_compressed(outdir, factorize_model(_fmnist_cnn(), ranks, "spatial"), recipe)  # ranks differ from _factored
    result = CliRunner().invoke(_cli(), ["convert", str(outdir), "--format", "onnx", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "relative" in result.output and "artifact:" in result.output
    exported = tmp_path / "o" / "model.onnx"
    stored = read_metadata(exported)
    assert json.loads(stored["edgecomp.ranks"]) == ranks
    assert stored["edgecomp.scheme"] == "spatial" and stored["edgecomp.device"] == "jetson-nano"
    ops = [n.op_type for n in load_onnx_checked(exported).graph.node]
    assert ops.count("Conv") == 5 and "BatchNormalization" not in ops

    args = ["convert", str(outdir), "--weights", "w.pt", "--format", "onnx", "-o", str(tmp_path / "x")]
    bad = CliRunner().invoke(_cli(), args)
    assert bad.exit_code == 2 and "own weights" in bad.output


def test_cli_rejects_int8_without_data_and_bad_precision(tmp_path):
    cli = _cli()
    r = CliRunner().invoke(cli, [*TINY, "--format", "ort", "--precision", "int8", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "--calib-data" in r.output
    r = CliRunner().invoke(cli, [*TINY, "--format", "onnx", "--precision", "fp16", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "fp16" in r.output
    assert not any(tmp_path.iterdir())


def test_cli_device_profile_checks_format_and_precision(tmp_path):
    cli = _cli()
    r = CliRunner().invoke(cli, [*TINY, "--format", "ort", "--device", "jetson-nano", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "tensorrt" in r.output
    args = [*TINY, "--format", "tensorrt", "--device", "jetson-nano", "--precision", "int8"]
    r = CliRunner().invoke(cli, [*args, "--calib-data", "fashion-mnist:test", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "supports fp32, fp16" in r.output
    r = CliRunner().invoke(cli, [*TINY, "--format", "onnx", "--device", "x86-host", "-o", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["precision"] == "fp32" and report["device"] == "x86-host"
    assert read_metadata(tmp_path / "model.onnx")["edgecomp.device"] == "x86-host"
