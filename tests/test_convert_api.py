"""edgecomp.exporters.convert.convert: one conversion from an nn.Module, an .onnx file or an output directory.

Tiny seeded models; every check compares files with what computed them (PyTorch, the float ONNX).
"""

from __future__ import annotations

import dataclasses
import json
import shlex

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgecomp.exporters.tensorrt as trt_export
from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.exporters import export_onnx, read_metadata
from edgecomp.exporters.convert import CALIBRATION_SAMPLES, ConvertResult, convert
from edgecomp.exporters.from_outdir import OutputDir, ReusedOnnx
from edgecomp.exporters.onnx_export import OnnxExportResult
from edgecomp.exporters.verify import cpu_session

SHAPE = (1, 1, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    yield


def _net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 5))
    with torch.no_grad():  # non-trivial statistics, so folding BatchNorm changes the weights
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE[1:])).astype(np.float32)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
        self.extra = nn.Linear(3, 2 * 6 * 6)

    def forward(self, image, extra):
        return self.image(image) + self.extra(extra)


def test_module_to_verified_onnx_with_the_notebook_call(tmp_path):
    model = _net()
    result = convert(model, tmp_path / "model.onnx", input_shape=SHAPE)
    assert isinstance(result, ConvertResult) and result.onnx_path == tmp_path / "model.onnx"
    assert result.artifact == result.onnx_path and result.written == [result.onnx_path]
    assert result.precision == "fp32" and result.int8_settings is None and result.quantization is None
    assert isinstance(result.onnx, OnnxExportResult) and result.onnx.folded_batchnorms == 1
    assert 0 <= result.relative_error <= 1e-4
    x = _inputs(5)  # a batch size the check did not use: the batch axis is dynamic
    (out,) = cpu_session(result.onnx_path).run(None, {"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.artifact = None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_several_inputs_take_one_shape_each(tmp_path):
    model = TwoInputs().eval()
    result = convert(model, tmp_path / "two.onnx", input_shape=[(1, 1, 8, 8), (1, 3)])
    graph = onnx.load(str(result.onnx_path)).graph
    assert [i.name for i in graph.input] == ["input_0", "input_1"] and result.relative_error <= 1e-4
    assert json.loads(read_metadata(result.onnx_path)["edgecomp.input_shape"]) == [[1, 1, 8, 8], [1, 3]]
    image, extra = _inputs(3), np.random.default_rng(2).standard_normal((3, 3)).astype(np.float32)
    (out,) = cpu_session(result.onnx_path).run(None, {"input_0": image, "input_1": extra})
    with torch.no_grad():
        expected = model(torch.from_numpy(image), torch.from_numpy(extra)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserInputError, match="one input"):  # INT8 calibrates single-input models only
        convert(model, tmp_path / "q", input_shape=[(1, 1, 8, 8), (1, 3)], precision="int8",
                calibration=_inputs(8))


def test_bad_calls_are_user_errors_and_write_nothing(tmp_path):
    with pytest.raises(UserInputError, match="input_shape"):
        convert(_net(), tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match="fp16"):
        convert(_net(), tmp_path / "m.onnx", input_shape=SHAPE, precision="fp16")  # fp16 is TensorRT's
    with pytest.raises(UserInputError, match="calibration"):
        convert(_net(), tmp_path / "m.onnx", input_shape=SHAPE, precision="int8")
    with pytest.raises(UserInputError, match="format"):
        convert(_net(), tmp_path / "m.onnx", input_shape=SHAPE, format="tflite")
    with pytest.raises(UserInputError, match=r"\.ort"):
        convert(_net(), tmp_path / "m.ort", input_shape=SHAPE)  # an .ort file for an ONNX-only conversion
    with pytest.raises(UserInputError, match="not found"):
        convert(tmp_path / "missing.onnx", tmp_path / "m.onnx")
    assert not any(tmp_path.iterdir())


def test_onnx_file_to_int8_and_ort_with_one_set_of_names(tmp_path):
    source = export_onnx(_net(), tmp_path / "src" / "net.onnx", SHAPE, metadata={"edgecomp.source_model": "mine"}).path
    result = convert(source, tmp_path / "mobile", format="ort", precision="int8", calibration=_inputs(64))
    folder = tmp_path / "mobile"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.int8.onnx", "model.onnx", "model.ort", "model.required_operators.config"]
    assert result.onnx_path == folder / "model.onnx" and result.int8_onnx_path == folder / "model.int8.onnx"
    assert result.artifact == result.ort_path == folder / "model.ort"
    assert isinstance(result.onnx, ReusedOnnx) and result.onnx.reused_from == source
    assert read_metadata(result.onnx_path)["edgecomp.source_model"] == "mine"  # the file's own metadata is kept
    assert result.quantization.calibration_samples == 64 and result.quantization.eval_source == "calibration"
    assert result.int8_settings.runs_on == "host" and result.mobile.criterion == "quantization_steps"
    # The INT8 .ort computes what the float model computes, to INT8 precision.
    x = _inputs(32, seed=5)
    float_out = cpu_session(source).run(None, {"input": x})[0]
    ort_out = cpu_session(result.ort_path).run(None, {"input": x})[0]
    assert np.abs(ort_out - float_out).max() < 0.1 * np.abs(float_out).max()
    assert (ort_out.argmax(1) == float_out.argmax(1)).mean() >= 0.9


def test_a_data_spec_draws_calibration_samples_and_holds_as_many_out(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((100, *SHAPE[1:])).astype(np.float32),
             y=rng.integers(0, 5, 100))
    assert CALIBRATION_SAMPLES == 256  # the one default (CLI --calib-samples, the export pipeline)
    result = convert(_net(), tmp_path / "o" / "net.onnx", input_shape=SHAPE, precision="int8",
                     calibration=f"npz:{tmp_path / 'd.npz'}", calibration_samples=16)
    q = result.quantization
    assert (q.calibration_samples, q.eval_samples, q.eval_source) == (16, 16, "eval_data")
    assert q.float_accuracy is not None  # the spec has labels
    assert result.artifact == tmp_path / "o" / "net.int8.onnx" and result.onnx_path == tmp_path / "o" / "net.onnx"
    assert result.onnx.check_batch == 8  # real samples checked the float export
    assert json.loads(read_metadata(result.artifact)["edgecomp.int8_settings"])["reason"] == result.int8_settings.reason


def _outdir(tmp_path, spec: str, *, with_onnx: bool):
    """An output directory of zoo:tiny_cnn (no layer factored) whose recipe names `spec`."""
    from edgecomp.factor import save_compressed
    from edgecomp.models import load_model

    model = load_model("zoo:tiny_cnn").module
    outdir = tmp_path / "out"
    recipe = {"source": {"spec": spec, "weights": None}, "scheme": "channel", "ranks": {},
              "input_shape": [1, 1, 28, 28], "device": "x86-host"}
    save_compressed(outdir, model, recipe)
    if with_onnx:
        export_onnx(model, outdir / "model.onnx", (1, 1, 28, 28))
    return outdir, model


def test_output_dir_is_converted_from_its_model_onnx_without_running_its_code(tmp_path):
    spec = f"{tmp_path / 'never_run.py'}:Net"  # code the recipe names: absent, so running it would fail
    outdir, model = _outdir(tmp_path, spec, with_onnx=True)
    result = convert(outdir, tmp_path / "o")
    assert isinstance(result.onnx, ReusedOnnx) and result.onnx.reused_from == outdir / "model.onnx"
    meta = read_metadata(result.onnx_path)
    assert meta["edgecomp.source_model"] == spec and meta["edgecomp.device"] == "x86-host"  # from the recipe
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(cpu_session(result.onnx_path).run(None, {"input": x})[0], expected, rtol=1e-4,
                               atol=1e-5)

    with pytest.raises(UserInputError, match="--opset 13.*--trust-code"):  # another export needs the code
        convert(outdir, tmp_path / "o13", opset=13)
    assert not (tmp_path / "o13").exists()


def test_output_dir_without_model_onnx_is_rebuilt_only_as_allowed(tmp_path):
    outdir, _ = _outdir(tmp_path, "zoo:tiny_cnn", with_onnx=False)  # edgecomp's own code: allowed
    result = convert(outdir, tmp_path / "o" / "tiny.onnx")
    assert isinstance(result.onnx, OnnxExportResult) and result.relative_error <= 1e-4
    assert result.onnx_path == tmp_path / "o" / "tiny.onnx"

    code_dir = tmp_path / "code"
    code_dir.mkdir()
    coded, _ = _outdir(code_dir, f"{code_dir / 'net.py'}:Net", with_onnx=False)
    with pytest.raises(UserInputError, match="--trust-code"):
        convert(coded, tmp_path / "c")
    # The caller's own spec of the architecture rebuilds it.
    rebuilt = convert(OutputDir(coded, model_spec="zoo:tiny_cnn"), tmp_path / "c")
    assert rebuilt.relative_error <= 1e-4


def test_into_an_output_dir_never_over_a_users_file(tmp_path):
    outdir, _ = _outdir(tmp_path, "zoo:tiny_cnn", with_onnx=True)
    (outdir / "model.int8.onnx").write_text("the user's own file")
    with pytest.raises(UserInputError, match="edgecomp did not write it"):
        convert(outdir, outdir, precision="int8", calibration=np.zeros((8, 1, 28, 28), np.float32))
    assert (outdir / "model.int8.onnx").read_text() == "the user's own file"


def test_tensorrt_without_tensorrt_leaves_the_script_for_the_device(tmp_path, monkeypatch):
    monkeypatch.setattr(trt_export, "_tensorrt_or_reason", lambda: (None, "no tensorrt here"))
    result = convert(_net(), tmp_path / "trt", input_shape=SHAPE, format="tensorrt")
    script = tmp_path / "trt" / "model.trtexec.sh"
    assert result.precision == "fp16" and result.artifact is None and result.engine_path is None
    assert result.trtexec_script == script and script.is_file() and result.engine_error == "no tensorrt here"
    assert shlex.split(script.read_text().strip().splitlines()[-1]) == list(result.trtexec_command) == [
        "trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", "--fp16", "--memPoolSize=workspace:1024M",
        "--minShapes=input:1x1x8x8", "--optShapes=input:1x1x8x8", "--maxShapes=input:8x1x8x8"]
    assert result.written == [tmp_path / "trt" / "model.onnx", script]


def test_tensorrt_engine_builder_builds_elsewhere_or_leaves_the_script(tmp_path):
    calls = []

    def on_the_target(onnx_path, command, engine_path):
        calls.append((onnx_path.name, command, engine_path))
        engine_path.write_bytes(b"ENGINE")

    result = convert(_net(), tmp_path / "a" / "net.plan", input_shape=SHAPE, format="tensorrt", precision="fp32",
                     engine_builder=on_the_target)
    ((name, command, engine),) = calls
    assert name == "net.onnx" and engine == tmp_path / "a" / "net.plan"
    assert command[:3] == ["trtexec", "--onnx=net.onnx", "--saveEngine=net.plan"] and "--fp16" not in command
    assert result.artifact == result.engine_path == engine and result.engine is None and result.trtexec_script is None

    def unreachable(onnx_path, command, engine_path):
        raise EdgecompError("trtexec failed on ssh://board (exit 1): out of memory")

    lines = []
    failed = convert(_net(), tmp_path / "b", input_shape=SHAPE, format="tensorrt", engine_builder=unreachable,
                     log=lines.append)
    assert failed.engine_path is None and failed.engine_error.startswith("trtexec failed on ssh://board")
    assert failed.trtexec_script == tmp_path / "b" / "model.trtexec.sh" and "out of memory" in lines[0]
    assert "out of memory" in failed.trtexec_script.read_text()
