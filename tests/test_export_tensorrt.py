"""TensorRT engine building.

Everywhere: the trtexec command line, the script written when TensorRT or a GPU is missing, the
error it raises, argument checks, and build_engine's use of the TensorRT 10 Python API exercised
against a recording stand-in for `tensorrt` and `cuda.bindings.runtime`. On a host with tensorrt
and a CUDA GPU, the tests marked `tensorrt` build real engines.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import os
import shlex
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import edgecomp.exporters.tensorrt as trt_export
from edgecomp.errors import MissingDependencyError, UserInputError
from edgecomp.exporters import (
    TensorRTUnavailableError,
    build_engine,
    export_onnx,
    quantize_int8,
    trtexec_command,
    write_trtexec_script,
)

SHAPE = (1, 1, 28, 28)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 14 * 14, 10),
    )


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export_onnx(_small_cnn(), tmp_path_factory.mktemp("trt") / "net.onnx", SHAPE).path


@pytest.fixture
def no_tensorrt(monkeypatch):
    reason = "the tensorrt Python package is not installed"
    monkeypatch.setattr(trt_export, "_tensorrt_or_reason", lambda: (None, reason))


# --- trtexec command line ------------------------------------------------------------------------


def test_trtexec_command_fp16_with_dynamic_batch():
    cmd = trtexec_command(
        "m.onnx",
        "m.engine",
        precision="fp16",
        workspace_mb=512,
        timing_cache="t.cache",
        input_name="input",
        min_shape=(1, 1, 28, 28),
        opt_shape=(4, 1, 28, 28),
        max_shape=(16, 1, 28, 28),
    )
    assert cmd == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--memPoolSize=workspace:512M",
        "--timingCacheFile=t.cache",
        "--minShapes=input:1x1x28x28",
        "--optShapes=input:4x1x28x28",
        "--maxShapes=input:16x1x28x28",
    ]


def test_trtexec_command_precisions():
    fp32 = trtexec_command("m.onnx", "m.plan", precision="fp32")
    assert "--fp16" not in fp32 and "--int8" not in fp32 and "--memPoolSize=workspace:1024M" in fp32
    assert not any(a.startswith(("--minShapes", "--timingCacheFile")) for a in fp32)
    int8 = trtexec_command("m.onnx", "m.plan", precision="int8", calibration_cache="m.calib")
    assert {"--int8", "--fp16", "--calib=m.calib"} <= set(int8)
    with pytest.raises(UserInputError, match="precision"):
        trtexec_command("m.onnx", "m.plan", precision="bf16")
    with pytest.raises(UserInputError, match="min/opt/max"):
        trtexec_command("m.onnx", "m.plan", min_shape=(1, 3))


def test_write_trtexec_script(tmp_path):
    script = write_trtexec_script(tmp_path / "a.onnx", ["trtexec", "--onnx=a b.onnx"], reason="no GPU")
    assert script == tmp_path / "a.trtexec.sh" and os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/bin/sh") and "no GPU" in text and "trtexec '--onnx=a b.onnx'" in text
    assert [p.name for p in tmp_path.iterdir()] == ["a.trtexec.sh"]


# --- optional packages -----------------------------------------------------------------------------


def test_optional_packages_each_have_one_install_hint(monkeypatch):
    from edgecomp.optional import OPTIONAL, require

    assert {name: entry.install for name, entry in OPTIONAL.items()} == {
        "tensorrt": 'pip install "edgecomp[tensorrt]"',
        "cuda-python": 'pip install "edgecomp[tensorrt]"',
        "onnxslim": 'pip install "edgecomp[simplify]"',
    }
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r'TensorRT.*pip install "edgecomp\[tensorrt\]"') as info:
        require("tensorrt")
    assert info.value.exit_code == 2 and isinstance(info.value.__cause__, ImportError)
    reason = trt_export._tensorrt_or_reason()
    assert reason[0] is None and "not installed" in reason[1]


def test_cuda_python_old_layout_is_found(monkeypatch):
    from edgecomp.exporters.trt_calibrator import load_cudart

    old = types.ModuleType("cuda.cudart")
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)  # cuda-python < 12.6 has no cuda.bindings
    monkeypatch.setitem(sys.modules, "cuda.cudart", old)
    assert load_cudart() is old
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python.*edgecomp\[tensorrt\]"):
        load_cudart()


# --- without TensorRT / GPU ----------------------------------------------------------------------


def test_build_without_tensorrt_writes_script_and_explains(onnx_file, no_tensorrt, tmp_path):
    engine = onnx_file.with_name("net.engine")
    with pytest.raises(TensorRTUnavailableError) as info:
        build_engine(onnx_file, engine, precision="fp16", workspace_mb=2048, timing_cache=onnx_file.with_name("tc.bin"))
    exc = info.value
    assert isinstance(exc, MissingDependencyError) and exc.exit_code == 2
    message = str(exc)
    assert "specific to the GPU" in message and "target device" in message and "edgecomp[tensorrt]" in message
    assert exc.script_path == onnx_file.with_name("net.trtexec.sh") and exc.script_path.is_file()
    assert str(exc.script_path) in message
    assert not engine.exists()
    # The script runs from its own folder, so the paths in it are relative to the ONNX file.
    line = exc.script_path.read_text().strip().splitlines()[-1]
    assert shlex.split(line) == exc.command == [
        "trtexec",
        "--onnx=net.onnx",
        "--saveEngine=net.engine",
        "--fp16",
        "--memPoolSize=workspace:2048M",
        "--timingCacheFile=tc.bin",
        "--minShapes=input:1x1x28x28",
        "--optShapes=input:1x1x28x28",
        "--maxShapes=input:8x1x28x28",
    ]


def test_checks_happen_before_looking_for_tensorrt(onnx_file, no_tensorrt, tmp_path):
    with pytest.raises(UserInputError, match="calibration"):
        build_engine(onnx_file, tmp_path / "e.engine", precision="int8")
    with pytest.raises(UserInputError, match="precision"):
        build_engine(onnx_file, tmp_path / "e.engine", precision="tf32")
    with pytest.raises(UserInputError, match="min_batch"):
        build_engine(onnx_file, tmp_path / "e.engine", min_batch=4, opt_batch=2)
    with pytest.raises(UserInputError, match="does not fit"):
        wrong_channels = np.zeros((4, 3, 28, 28), np.float32)
        build_engine(onnx_file, tmp_path / "e.engine", precision="int8", calibration=wrong_channels)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="bad.onnx"):
        build_engine(bad, tmp_path / "e.engine")
    assert not (tmp_path / "e.engine").exists() and not (tmp_path / "bad.trtexec.sh").exists()


def test_int8_qdq_model_needs_no_calibration(onnx_file, no_tensorrt, tmp_path):
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    qdq = quantize_int8(onnx_file, tmp_path / "net.qdq.onnx", x, symmetric_activations=True, runs_on="gpu").path
    with pytest.raises(TensorRTUnavailableError) as info:
        build_engine(qdq, tmp_path / "net.engine", precision="int8")
    assert "--int8" in info.value.command and not any(a.startswith("--calib") for a in info.value.command)
    assert (tmp_path / "net.trtexec.sh").is_file()  # named after the engine it builds


# --- the TensorRT API calls, against a recording stand-in ----------------------------------------


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


def _fake_tensorrt(calls: list):
    """Just enough of the TensorRT 10 Python API, recording every call that build_engine makes."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"

    class ILogger:
        Severity = _Severity

        def __init__(self):
            calls.append(("ILogger.__init__",))

    class IInt8EntropyCalibrator2:
        def __init__(self):
            calls.append(("Calibrator.__init__",))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return memoryview(self.data + b"+timings")

    class Config:
        int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def set_calibration_profile(self, profile):
            calls.append(("set_calibration_profile",))

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            self.cache = TimingCache(bytes(data))
            return self.cache

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            self.logger.log(_Severity.INFO, "building")
            self.logger.log(_Severity.VERBOSE, "too chatty")
            calib = config.int8_calibrator
            if calib is not None:
                calls.append(("batch_size", calib.get_batch_size()))
                if calib.read_calibration_cache() is None:
                    n = 0
                    while calib.get_batch(["input"]) is not None:
                        n += 1
                    calls.append(("calibrated_batches", n))
                    calib.write_calibration_cache(memoryview(b"calibration-table"))
            return memoryview(b"ENGINE")

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", os.path.basename(path)))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "output"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return (-1, 1, 28, 28) if name == "input" else (-1, 10)

        def get_tensor_dtype(self, name):
            return "DataType.FLOAT"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            assert bytes(data) == b"ENGINE"
            return Engine()

    trt.ILogger = ILogger
    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 INT8")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0})
    return trt


def _fake_cudart(calls: list):
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = enum.Enum("cudaError_t", "cudaSuccess cudaErrorMemoryAllocation")
    rt.cudaMemcpyKind = enum.Enum("cudaMemcpyKind", "cudaMemcpyHostToDevice")
    ok = rt.cudaError_t.cudaSuccess
    rt.cudaGetDeviceCount = lambda: (ok, 1)
    rt.cudaMalloc = lambda n: (calls.append(("cudaMalloc", n)), (ok, 4096))[1]
    rt.cudaMemcpy = lambda dst, src, n, kind: (calls.append(("cudaMemcpy", dst, n, kind.name)), (ok,))[1]
    rt.cudaFree = lambda ptr: (calls.append(("cudaFree", ptr)), (ok,))[1]
    return rt


@pytest.fixture
def fake_trt(monkeypatch):
    calls: list = []
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = _fake_cudart(calls)
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(calls))
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", bindings.runtime)
    return calls


def test_build_engine_fp16_api_calls(onnx_file, fake_trt, tmp_path):
    engine_path = tmp_path / "net.engine"
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    result = build_engine(onnx_file, engine_path, precision="fp16", workspace_mb=256, timing_cache=cache, max_batch=4)
    assert engine_path.read_bytes() == b"ENGINE" and result.size_bytes == 6
    assert cache.read_bytes() == b"old+timings"  # read, handed to the builder, and written back
    names = [c[0] for c in fake_trt]
    assert ("create_network", 0) in fake_trt  # TensorRT 10: explicit batch is implicit
    assert ("parse_from_file", "net.onnx") in fake_trt
    assert ("set_memory_pool_limit", sys.modules["tensorrt"].MemoryPoolType.WORKSPACE, 256 << 20) in fake_trt
    flags = [c[1].name for c in fake_trt if c[0] == "set_flag"]
    assert flags == ["FP16"]
    assert ("set_shape", "input", (1, 1, 28, 28), (1, 1, 28, 28), (4, 1, 28, 28)) in fake_trt
    assert ("create_timing_cache", b"old") in fake_trt and ("set_timing_cache", False) in fake_trt
    assert "Calibrator.__init__" not in names
    assert result.log == ["[I] building"]  # info level captured, verbose filtered
    assert result.io_tensors["input"] == {"mode": "input", "shape": [-1, 1, 28, 28], "dtype": "FLOAT"}
    assert result.min_shape == (1, 1, 28, 28) and result.max_shape == (4, 1, 28, 28)
    assert result.tensorrt_version == "10.3.0" and not result.explicit_quantization


def test_build_engine_int8_calibrates_then_reuses_cache(onnx_file, fake_trt, tmp_path):
    x = np.random.default_rng(0).random((100, 1, 28, 28), dtype=np.float32)
    engine_path = tmp_path / "net.engine"
    result = build_engine(onnx_file, engine_path, precision="int8", calibration=x, calibration_batch_size=32)
    calib_cache = tmp_path / "net.calib"
    assert result.calibration_cache == calib_cache and calib_cache.read_bytes() == b"calibration-table"
    assert ("batch_size", 32) in fake_trt and ("calibrated_batches", 3) in fake_trt  # 100 -> 3 full batches
    copies = [c for c in fake_trt if c[0] == "cudaMemcpy"]
    assert len(copies) == 3 and all(c[2] == 32 * 28 * 28 * 4 and c[3] == "cudaMemcpyHostToDevice" for c in copies)
    assert ("cudaFree", 4096) in fake_trt  # device buffer released
    assert ("set_calibration_profile",) in fake_trt
    assert sorted(c[1].name for c in fake_trt if c[0] == "set_flag") == ["FP16", "INT8"]
    assert f"--calib={os.path.relpath(calib_cache, onnx_file.parent)}" in result.trtexec  # relative to the ONNX

    fake_trt.clear()  # second build: the cache exists, so no data is needed and none is read
    build_engine(onnx_file, engine_path, precision="int8")
    assert not any(c[0] == "calibrated_batches" for c in fake_trt)


# --- CLI -----------------------------------------------------------------------------------------


def _cli():
    """The real `edgecomp` group: its error handling (one `error:` line, exit code 2) is part of what is tested."""
    from edgecomp.cli import main

    return main


def test_cli_tensorrt_without_gpu_exits_2_with_script(no_tensorrt, tmp_path):
    out = tmp_path / "build" / "tiny.engine"
    args = ["convert", "zoo:tiny_cnn", "--format", "tensorrt", "--precision", "fp16", "-o", str(out), "--json"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 2
    assert "specific to the GPU" in result.stderr
    report = json.loads(result.stdout)
    assert report["artifact"] is None and report["onnx"]["relative_error"] <= 1e-4
    script = tmp_path / "build" / "tiny.trtexec.sh"
    assert report["trtexec_script"] == str(script) and script.is_file()
    assert "--saveEngine=tiny.engine" in script.read_text() and (tmp_path / "build" / "tiny.onnx").is_file()
    assert not out.exists()


# --- real TensorRT -------------------------------------------------------------------------------


def _tensorrt_and_gpu() -> str | None:
    """None when real engines can be built here, else why not (the skip reason)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (engines are built on the target device)"
    trt, reason = trt_export._tensorrt_or_reason()
    return reason


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(_tensorrt_and_gpu() is not None, reason=str(_tensorrt_and_gpu()))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_engine_build(onnx_file, tmp_path, precision):
    source = onnx_file
    if precision == "int8":
        x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
        source = quantize_int8(onnx_file, tmp_path / "net.qdq.onnx", x, symmetric_activations=True, runs_on="gpu").path
    cache = tmp_path / "tc.bin"
    result = build_engine(source, tmp_path / "net.engine", precision=precision, timing_cache=cache, max_batch=4)
    assert result.path.is_file() and result.size_bytes > 0
    assert (tmp_path / "tc.bin").is_file()
    assert result.io_tensors["input"]["mode"] == "input"
    assert result.explicit_quantization == (precision == "int8")
