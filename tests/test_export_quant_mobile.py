"""ONNX Runtime INT8 (static QDQ) quantization and ORT-format mobile conversion.

The accuracy test trains zoo:tiny_cnn briefly on Fashion-MNIST inside the test (seeded, a few
seconds), quantizes it with 256 training images and measures float vs INT8 on 1000 test images.
Bound: the INT8 model may lose at most 1.5 top-1 points (per-channel symmetric weights, min/max
activations; typical loss for a CNN this size is well under one point).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from edgecomp.errors import UserInputError, VerificationError
from exporters import export_onnx, quantize_int8, read_metadata, to_ort_format
from exporters.entropy import kl_threshold
from exporters.verify import cpu_session

MAX_INT8_DROP_POINTS = 1.5
SHAPE = (1, 1, 28, 28)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one intra-op thread is as fast and immune to oversubscribed CI hosts."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fmnist():
    from edgecomp.data import load_dataset, take_batch

    x_train, y_train = take_batch(load_dataset("fashion-mnist:train"), 3000, seed=0)
    x_test, y_test = take_batch(load_dataset("fashion-mnist:test"), 1000, seed=0)
    return x_train, y_train, x_test.numpy(), y_test.numpy()


@pytest.fixture(scope="module")
def trained_onnx(fmnist, tmp_path_factory):
    """zoo:tiny_cnn after one seeded epoch over 3000 training images, exported to ONNX."""
    from edgecomp.models import load_model

    x, y, _, _ = fmnist
    model = load_model("zoo:tiny_cnn").module.train()
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(x), 50):
        idx = order[start : start + 50]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("trained") / "tiny.onnx"
    export_onnx(model, path, SHAPE, metadata={"edgecomp.source_model": "zoo:tiny_cnn"})
    return path


def test_int8_accuracy_drop_on_fashion_mnist(trained_onnx, fmnist, tmp_path):
    x_train, _, x_test, y_test = fmnist
    result = quantize_int8(
        trained_onnx, tmp_path / "tiny.int8.onnx", x_train[:256].numpy(), eval_data=x_test, eval_labels=y_test
    )
    assert result.float_accuracy > 0.6, "the in-test training did not learn; the bound below would be meaningless"
    assert result.eval_samples == 1000 and result.eval_source == "eval_data"
    assert result.calibration_samples == 256
    assert result.accuracy_drop_points <= MAX_INT8_DROP_POINTS, result
    assert result.top1_agreement >= 0.95
    assert 0 < result.relative_error < 0.1  # quantized, so not identical, but close

    model = onnx.load(str(result.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    weights_int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights_int8, "weights are stored as int8"
    assert result.size_bytes < result.float_size_bytes
    meta = read_metadata(result.path)
    assert meta["edgecomp.precision"] == "int8" and meta["edgecomp.source_model"] == "zoo:tiny_cnn"

    # The reported numbers are reproducible from the files.
    float_top = cpu_session(trained_onnx).run(None, {"input": x_test})[0].argmax(1)
    int8_top = cpu_session(result.path).run(None, {"input": x_test})[0].argmax(1)
    assert (float_top == y_test).mean() == pytest.approx(result.float_accuracy)
    assert (int8_top == y_test).mean() == pytest.approx(result.int8_accuracy)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(trained_onnx, fmnist, tmp_path, method):
    x_train, _, x_test, _ = fmnist
    batches = [x_train[i : i + 32] for i in range(0, 128, 32)]  # an iterable of batches works too
    result = quantize_int8(
        trained_onnx, tmp_path / f"{method}.onnx", batches, calibrate_method=method, eval_data=x_test[:200]
    )
    assert result.calibrate_method == method and result.calibration_samples == 128
    assert result.top1_agreement >= 0.9 and result.accuracy_drop_points is None


def test_symmetric_activations_have_zero_points_of_zero(trained_onnx, fmnist, tmp_path):
    x_train = fmnist[0][:64].numpy()
    result = quantize_int8(trained_onnx, tmp_path / "sym.onnx", x_train, symmetric_activations=True)
    assert result.eval_source == "calibration"
    model = onnx.load(str(result.path))
    zero_points = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_zero_point")]
    assert zero_points and all(not zp.any() for zp in zero_points)


def test_quantize_rejects_bad_input_and_keeps_nothing(trained_onnx, fmnist, tmp_path):
    x_train = fmnist[0][:64].numpy()
    with pytest.raises(UserInputError, match="does not fit"):
        quantize_int8(trained_onnx, tmp_path / "q.onnx", np.zeros((8, 3, 28, 28), np.float32))
    with pytest.raises(UserInputError, match="calibrate_method"):
        quantize_int8(trained_onnx, tmp_path / "q.onnx", x_train, calibrate_method="kl")
    with pytest.raises(UserInputError, match="different path"):
        quantize_int8(trained_onnx, trained_onnx, x_train)
    with pytest.raises(UserInputError, match="labels"):
        quantize_int8(trained_onnx, tmp_path / "q.onnx", x_train, eval_data=x_train, eval_labels=np.zeros(3))
    with pytest.raises(VerificationError, match="accuracy drop"):
        # Labels equal to the float model's own predictions: any disagreement is a drop > -1 points.
        preds = cpu_session(trained_onnx).run(None, {"input": x_train})[0].argmax(1)
        quantize_int8(trained_onnx, tmp_path / "q.onnx", x_train, eval_labels=preds, max_accuracy_drop=-1.0)
    assert not any(tmp_path.iterdir())


def test_kl_threshold_clips_outliers_but_keeps_the_bulk():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(200_000), [40.0, -40.0]])  # two far outliers
    hist, edges = np.histogram(values, bins=2048, range=(-40.0, 40.0))
    low, high, _ = kl_threshold(hist, edges, 128)
    assert -12 < low < -3 and 3 < high < 12  # clips the outliers, keeps the Gaussian's +-3 sigma
    uniform_hist, uniform_edges = np.histogram(rng.uniform(-1, 1, 200_000), bins=2048, range=(-1, 1))
    low, high, _ = kl_threshold(uniform_hist, uniform_edges, 128)
    assert low < -0.9 and high > 0.9  # nothing to clip in a uniform distribution


# --- ORT format (ONNX Runtime Mobile) ------------------------------------------------------------


def test_ort_format_float_and_int8(trained_onnx, fmnist, tmp_path):
    x_train, _, x_test, _ = fmnist
    out = tmp_path / "mobile"
    mobile = to_ort_format(trained_onnx, out, check_inputs=x_test[:16])
    assert mobile.ort_path == out / "tiny.ort" and mobile.ort_path.is_file()
    assert mobile.config_path.is_file() and any(op.endswith("Conv") for op in mobile.required_operators)
    assert mobile.relative_error <= 1e-4
    session = ort.InferenceSession(str(mobile.ort_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"input": x_test[:4]})[0],
        cpu_session(trained_onnx).run(None, {"input": x_test[:4]})[0],
        rtol=1e-4,
        atol=1e-5,
    )

    quant = quantize_int8(trained_onnx, tmp_path / "tiny.int8.onnx", x_train[:128].numpy())
    mobile8 = to_ort_format(quant.path, out, check_inputs=x_test[:16])
    assert mobile8.ort_path.name == "tiny.int8.ort" and mobile8.relative_error <= 1e-4
    quantized_ops = ("ai.onnx:QuantizeLinear", "com.microsoft:QLinear", "ai.onnx:QLinear")
    assert any(op.startswith(quantized_ops) for op in mobile8.required_operators)
    assert sorted(p.name for p in out.iterdir()) == [
        "tiny.int8.ort",
        "tiny.int8.required_operators.config",
        "tiny.ort",
        "tiny.required_operators.config",
    ]  # no temporary folders left behind


def test_ort_format_rejects_corrupt_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(UserInputError, match="bad.onnx"):
        to_ort_format(bad, tmp_path / "out")
    with pytest.raises(UserInputError, match="target_platform"):
        to_ort_format(bad, tmp_path / "out", target_platform="riscv")


def _cli():
    """A local group holding the command, mapping EdgecompError to its exit code like `edgecomp` does."""
    import sys

    import click

    from edgecomp.cli.convert import command
    from edgecomp.errors import EdgecompError

    class Group(click.Group):
        def invoke(self, ctx):
            try:
                return super().invoke(ctx)
            except EdgecompError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(exc.exit_code)

    group = Group()
    group.add_command(command)
    return group


def test_cli_convert_ort_int8(tmp_path):
    args = ["convert", "zoo:tiny_cnn", "--format", "ort", "--precision", "int8"]
    args += ["--calib-data", "fashion-mnist:test", "--calib-samples", "64", "-o", str(tmp_path / "m"), "--json"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["artifact"].endswith("model.int8.ort") and report["precision"] == "int8"
    assert report["quantization"]["calibration_samples"] == 64 and report["quantization"]["eval_samples"] == 64
    assert report["quantization"]["float_accuracy"] is not None  # fashion-mnist:test has labels
    assert report["mobile"]["relative_error"] <= 1e-4
    ort.InferenceSession(report["artifact"], providers=["CPUExecutionProvider"])
