"""ONNX Runtime INT8 (static QDQ) quantization and ORT-format mobile conversion.

The accuracy test trains zoo:tiny_cnn briefly on Fashion-MNIST inside the test (seeded, a few
seconds), quantizes it with 256 training images and measures float vs INT8 on 1000 test images.
Bound: the INT8 model may lose at most 1.5 top-1 points (per-channel symmetric weights, min/max
activations; typical loss for a CNN this size is well under one point).

The weight range depends on the CPU that runs the model (exporters.cpu_features): the decision is
tested with faked /proc/cpuinfo flags, the real path on whatever CPU runs the suite, and, where
qemu-x86_64 is installed, on an emulated x86 CPU without VNNI (Haswell) whose int8 kernels saturate.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from edgecomp.errors import UserInputError, VerificationError
from edgecomp.exporters import export_onnx, quantize_int8, read_metadata, to_ort_format
from edgecomp.exporters.cpu_features import (
    CpuInfo,
    cpu_from_agent,
    cpu_from_flags,
    host_cpu,
    int8_runs_on,
    int8_settings,
    parse_cpuinfo,
    saturates,
)
from edgecomp.exporters.entropy import kl_threshold
from edgecomp.exporters.mobile import MAX_INT8_ERROR_STEPS, output_steps, quantized_agreement
from edgecomp.exporters.cpu_features import EXACT_X86_INT8
from edgecomp.exporters.verify import cpu_session

MAX_INT8_DROP_POINTS = 1.5
SHAPE = (1, 1, 28, 28)

# /proc/cpuinfo excerpts (first processor, flags trimmed to the relevant ones plus a few others).
SKYLAKE_SP = "processor\t: 0\nmodel name\t: Xeon Gold 6148\nflags\t\t: fpu sse4_1 avx2 avx512f avx512bw avx512vl\n"
CASCADE_LAKE = "processor\t: 0\nflags\t\t: fpu sse4_1 avx2 avx512f avx512bw avx512_vnni\n"
ALDER_LAKE = "processor\t: 0\nflags\t\t: fpu sse4_1 avx2 avx_vnni\n"
# Two processors: only the first one's flags are read.
HASWELL = "processor\t: 0\nflags\t\t: fpu sse4_1 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512_vnni\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes asimddp\nCPU implementer\t: 0x41\n"


def _weights_int8(path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    return [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8
            and i.dims and not i.name.endswith("zero_point")]


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
    weights_int8 = _weights_int8(result.path)
    assert weights_int8, "weights are stored as int8"
    assert result.size_bytes < result.float_size_bytes
    meta = read_metadata(result.path)
    assert meta["edgecomp.precision"] == "int8" and meta["edgecomp.source_model"] == "zoo:tiny_cnn"

    # The weight range was chosen for this machine's CPU and recorded with the reason.
    settings = json.loads(meta["edgecomp.int8_settings"])
    host_saturates = saturates(host_cpu())
    assert settings["weights"]["reduce_range"] is host_saturates is result.int8_settings.reduce_range
    assert settings["chosen_for"]["runs_on"] == "host" and settings["reason"]
    assert settings["activations"] == {"type": "int8", "symmetric": False, "calibration": "minmax"}
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights_int8)
    assert largest <= 64 if host_saturates else largest > 64  # full range reaches 127 on the widest channel
    assert not result.exact_kernels  # chosen for this host: the default session computes it exactly

    # The reported numbers are reproducible from the files.
    float_top = cpu_session(trained_onnx).run(None, {"input": x_test})[0].argmax(1)
    int8_top = cpu_session(result.path).run(None, {"input": x_test})[0].argmax(1)
    assert (float_top == y_test).mean() == pytest.approx(result.float_accuracy)
    assert (int8_top == y_test).mean() == pytest.approx(result.int8_accuracy)


# --- the weight range for the CPU that runs the model ------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "reduce_range"),
    [
        ("x86_64", SKYLAKE_SP, True),  # AVX-512 without VNNI: the CPU
        ("x86_64", HASWELL, True),  # AVX2 without VNNI (the first processor counts)
        ("x86_64", CASCADE_LAKE, False),  # AVX512_VNNI
        ("x86_64", ALDER_LAKE, False),  # AVX-VNNI without AVX-512
        ("aarch64", GRAVITON, False),  # ARM accumulates in int32
        ("riscv64", "processor\t: 0\nisa\t: rv64imafdc\n", True),  # unknown kernels: the exact choice
        ("x86_64", "", True),  # no flags at all: cannot show VNNI
    ],
)
def test_weight_range_from_faked_cpu_flags(machine, cpuinfo, reduce_range):
    cpu = cpu_from_flags(machine, cpuinfo, None, source="given")
    settings = int8_settings(cpu)
    assert settings.reduce_range is reduce_range and saturates(cpu) is (reduce_range and cpu.family == "x86")
    assert settings.weight_range == ((-64, 64) if reduce_range else (-127, 127))
    assert settings.runs_on == "given" and settings.machine == machine and settings.reason


def test_cpu_flag_sources_and_what_runs_the_model():
    assert parse_cpuinfo(HASWELL) == {"fpu", "sse4_1", "avx2", "fma"}
    assert "asimddp" in parse_cpuinfo(GRAVITON) and parse_cpuinfo("model name : x\n") == set()
    # /proc/cpuinfo claims VNNI but the CPUID probe (what the kernels follow, e.g. under an emulator) does not.
    emulated = cpu_from_flags("x86_64", CASCADE_LAKE, frozenset({"sse4_1", "avx2"}))
    assert "avx512_vnni" not in emulated.flags and int8_settings(emulated).reduce_range
    # A Sapphire Rapids host's text (AVX-VNNI and AMX too, which the probe cannot see) under an emulated Haswell.
    sapphire = CASCADE_LAKE.replace("avx512_vnni", "avx512_vnni avx_vnni amx_int8")
    emulated = cpu_from_flags("x86_64", sapphire, frozenset({"sse4_1", "avx2"}))
    assert saturates(emulated) and "CPUID" in emulated.detail
    assert not saturates(cpu_from_flags("x86_64", sapphire, frozenset({"sse4_1", "avx2", "avx512bw", "avx512_vnni"})))
    assert not int8_settings(cpu_from_flags("x86_64", CASCADE_LAKE, frozenset({"avx2", "avx512_vnni"}))).reduce_range
    assert cpu_from_flags("AMD64", None, frozenset({"avx2", "avx512_vnni"})).detail.startswith("numpy")  # Windows
    # The agent's report: flags and machine; an old agent without flags gives the 7-bit choice on x86.
    target = cpu_from_agent({"machine": "aarch64", "cpu_flags": sorted(parse_cpuinfo(GRAVITON))})
    assert target.source == "target" and not int8_settings(target).reduce_range
    assert int8_settings(cpu_from_agent({"machine": "x86_64"})).reduce_range
    assert int8_settings("unknown").reduce_range and not int8_settings("gpu").reduce_range
    assert int8_runs_on("tensorrt", local=False) == "gpu"
    assert int8_runs_on("onnxruntime", local=True) == "host" and int8_runs_on(None, local=False) == "unknown"
    with pytest.raises(ValueError, match="runs_on"):
        int8_settings("phone")


def test_agent_reports_the_flags_the_host_parses():
    from edgecomp.runtime import agent

    env = agent.environment()
    assert env["machine"] and "cpu_flags" in env
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        assert env["cpu_flags"] is None
        return
    assert env["cpu_flags"] == sorted(parse_cpuinfo(text))
    assert int8_settings(cpu_from_agent(env)).reduce_range == saturates(cpu_from_flags(env["machine"], text, None))
    fake = Path(agent.__file__).parent / "no-such-cpuinfo"
    assert agent.cpu_flags(str(fake)) is None


def test_quantize_for_a_given_cpu_records_it(trained_onnx, fmnist, tmp_path):
    x_train = fmnist[0][:64].numpy()
    skylake = cpu_from_flags("x86_64", SKYLAKE_SP, None, source="target")
    seven = quantize_int8(trained_onnx, tmp_path / "skylake.onnx", x_train, runs_on=skylake, symmetric_activations=True)
    assert seven.int8_settings.reduce_range and not seven.exact_kernels
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _weights_int8(seven.path)) <= 64
    meta = json.loads(read_metadata(seven.path)["edgecomp.int8_settings"])
    assert meta["weights"]["range"] == [-64, 64] and meta["chosen_for"]["runs_on"] == "target"
    assert meta["chosen_for"]["cpu_flags"] == ["sse4_1", "avx2", "avx512bw"] and "no VNNI" in meta["reason"]
    assert meta["activations"]["symmetric"] is True

    phone = CpuInfo(machine="aarch64", flags=parse_cpuinfo(GRAVITON), source="target")
    full = quantize_int8(trained_onnx, tmp_path / "phone.onnx", x_train, runs_on=phone)
    assert not full.int8_settings.reduce_range
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _weights_int8(full.path)) > 64
    # Measured with exact kernels exactly when this host would saturate on full-range weights.
    assert full.exact_kernels is saturates(host_cpu())
    with pytest.raises(UserInputError, match="runs_on"):
        quantize_int8(trained_onnx, tmp_path / "x.onnx", x_train, runs_on="phone")


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None or not sys.platform.startswith("linux")
    or platform.machine() not in ("x86_64", "AMD64"),
    reason="needs an x86-64 Linux host with qemu-x86_64 (Debian: qemu-user) to emulate an x86 CPU without VNNI",
)
def test_weight_ranges_on_an_emulated_cpu_without_vnni(trained_onnx, fmnist, tmp_path):
    """Under qemu's Haswell (AVX2, no VNNI) ONNX Runtime runs its saturating u8*s8 kernels for real."""
    x_train, _, x_test, _ = fmnist
    x = x_test[:200]
    np.save(tmp_path / "x.npy", x)
    haswell = cpu_from_flags("x86_64", HASWELL, None, source="given")
    seven = quantize_int8(trained_onnx, tmp_path / "seven.onnx", x_train[:128].numpy(), runs_on=haswell).path
    full = quantize_int8(trained_onnx, tmp_path / "full.onnx", x_train[:128].numpy(), runs_on="gpu").path
    # Only numpy, onnxruntime and the stdlib cpu_features module: importing torch under emulation is slow.
    script = (
        "import importlib.util, json, sys, numpy as np, onnxruntime as ort\n"
        "spec = importlib.util.spec_from_file_location('cpu_features', 'exporters/cpu_features.py')\n"
        "cf = sys.modules['cpu_features'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(cf)\n"
        "d, exact_key = sys.argv[1], sys.argv[2]; x = np.load(d + '/x.npy')\n"
        "def run(name, exact):\n"
        "    o = ort.SessionOptions(); o.log_severity_level = 3\n"
        "    if exact: o.add_session_config_entry(exact_key, '1')\n"
        "    s = ort.InferenceSession(d + '/' + name, o, providers=['CPUExecutionProvider'])\n"
        "    return s.run(None, {'input': x})[0]\n"
        "np.savez(d + '/emulated.npz', seven=run('seven.onnx', False), full_exact=run('full.onnx', True))\n"
        "print(json.dumps({'saturates': cf.saturates(cf.host_cpu())}))\n"
    )
    run = subprocess.run(
        ["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", script, str(tmp_path), EXACT_X86_INT8],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"saturates": True}  # detected under emulation
    emulated = np.load(tmp_path / "emulated.npz")
    np.testing.assert_array_equal(emulated["seven"], cpu_session(seven).run(None, {"input": x})[0])
    np.testing.assert_array_equal(emulated["full_exact"], cpu_session(full).run(None, {"input": x})[0])


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
    assert mobile8.ort_path.name == "tiny.int8.ort" and mobile8.criterion == "quantization_steps"
    # The step is the scale of the output's DequantizeLinear; the check is reproducible from the files.
    model8 = onnx.load(str(quant.path))
    dq = next(n for n in model8.graph.node if n.output[0] == model8.graph.output[0].name)
    scale = next(onnx.numpy_helper.to_array(i) for i in model8.graph.initializer if i.name == dq.input[1])
    assert dq.op_type == "DequantizeLinear" and mobile8.output_step == pytest.approx(float(scale))
    onnx_out = cpu_session(quant.path).run(None, {"input": x_test[:200]})[0]
    ort_out = cpu_session(mobile8.ort_path).run(None, {"input": x_test[:200]})[0]
    steps, top1, kept = quantized_agreement([onnx_out], [ort_out], [float(scale)], MAX_INT8_ERROR_STEPS)
    assert steps <= MAX_INT8_ERROR_STEPS and kept and top1 >= 0.99, (steps, top1)
    assert mobile8.error_steps <= mobile8.max_error_steps == MAX_INT8_ERROR_STEPS and mobile8.top1_agreement >= 0.9
    quantized_ops = ("ai.onnx:QuantizeLinear", "com.microsoft:QLinear", "ai.onnx:QLinear")
    assert any(op.startswith(quantized_ops) for op in mobile8.required_operators)
    assert sorted(p.name for p in out.iterdir()) == [
        "tiny.int8.ort",
        "tiny.int8.required_operators.config",
        "tiny.ort",
        "tiny.required_operators.config",
    ]  # no temporary folders left behind


def test_quantized_agreement_counts_steps_and_decisions():
    ref = np.array([[0.0, 1.0, 5.0], [2.0, 2.1, 0.0], [3.0, 0.0, 0.0]])  # step 0.1; sample 1 is a near-tie
    steps, top1, kept = quantized_agreement([ref], [ref + [[0, 0.1, -0.2], [0.1, -0.1, 0], [0, 0, 0]]], [0.1], 4)
    assert steps == pytest.approx(2.0) and top1 == pytest.approx(2 / 3) and kept  # the tie may flip
    steps, _, kept = quantized_agreement([ref], [ref + [[0, 0, 0], [0, 0, 0], [-3.5, 0, 0]]], [0.1], 4)
    assert steps == pytest.approx(35.0) and not kept  # a saturation-sized error flips a clear decision
    steps, top1, kept = quantized_agreement([ref[:, 0]], [ref[:, 0]], [0.1], 4)
    assert steps == 0 and top1 is None and kept  # not (batch, classes): the step bound alone


def test_output_step_without_an_output_dequantize(tmp_path):
    """A QDQ graph whose output is a float op: one int8 step of the output's range."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Relu", ["d"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(0.5, np.float32), "s"),
                               numpy_helper.from_array(np.array(0, np.int8), "z")])
    model = helper.make_model(graph)
    assert output_steps(model, [np.array([[0.0, 51.0, 2.0, 3.0]])]) == [pytest.approx(0.2)]
    d = helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 4])
    dq_out = helper.make_graph(nodes[:2], "g", graph.input, [d], graph.initializer)
    assert output_steps(helper.make_model(dq_out), [np.zeros((1, 4))]) == [0.5]


def test_ort_format_rejects_corrupt_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(UserInputError, match="bad.onnx"):
        to_ort_format(bad, tmp_path / "out")
    with pytest.raises(UserInputError, match="target_platform"):
        to_ort_format(bad, tmp_path / "out", target_platform="riscv")


def _cli():
    """The real `edgecomp` group: its error handling (one `error:` line, exit code 2) is part of what is tested."""
    from edgecomp.cli import main

    return main


def test_cli_convert_ort_int8(tmp_path):
    args = ["convert", "zoo:tiny_cnn", "--format", "ort", "--precision", "int8"]
    args += ["--calib-data", "fashion-mnist:test", "--calib-samples", "64", "-o", str(tmp_path / "m"), "--json"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["artifact"] == str(tmp_path / "m" / "model.ort") and report["precision"] == "int8"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.int8.onnx", "model.onnx", "model.ort", "model.required_operators.config"]  # one set of names
    assert report["quantization"]["calibration_samples"] == 64 and report["quantization"]["eval_samples"] == 64
    assert report["quantization"]["float_accuracy"] is not None  # fashion-mnist:test has labels
    mobile = report["mobile"]
    assert mobile["criterion"] == "quantization_steps" and mobile["error_steps"] <= mobile["max_error_steps"]
    settings = report["quantization"]["int8_settings"]
    assert settings["runs_on"] == "host" and settings["reduce_range"] is saturates(host_cpu())
    meta = json.loads(read_metadata(tmp_path / "m" / "model.int8.onnx")["edgecomp.int8_settings"])
    assert meta["weights"]["reduce_range"] is settings["reduce_range"] and meta["reason"] == settings["reason"]
    ort.InferenceSession(report["artifact"], providers=["CPUExecutionProvider"])


def test_cli_convert_int8_for_a_remote_cpu_uses_7_bit_weights(tmp_path):
    """A phone reached over adb: its CPU is unknown at conversion time, so the weights are exact everywhere."""
    args = ["convert", "zoo:tiny_cnn", "--format", "onnx", "--precision", "int8", "--device", "pixel-8"]
    args += ["--calib-data", "fashion-mnist:test", "--calib-samples", "32", "-o", str(tmp_path / "m"), "--json"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    settings = report["quantization"]["int8_settings"]
    assert settings["runs_on"] == "unknown" and settings["reduce_range"] is True
    assert report["artifact"] == str(tmp_path / "m" / "model.int8.onnx")  # the float model stays model.onnx
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _weights_int8(tmp_path / "m" / "model.int8.onnx")) <= 64
    assert not _weights_int8(tmp_path / "m" / "model.onnx")
