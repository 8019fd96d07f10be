"""Build a TensorRT engine from a verified ONNX file (TensorRT 10 Python API, imported lazily).

An engine is compiled for one GPU architecture and one TensorRT version, so it must be built on
the target device. Where TensorRT or a CUDA GPU is missing, build_engine writes the equivalent
`trtexec` command to `<engine stem>.trtexec.sh` next to the ONNX file and raises
TensorRTUnavailableError naming it; copy both files to the target and run the script there.
`engine_command` gives that command without building (for a build elsewhere, e.g. on the target).

Precisions: fp32; fp16 (BuilderFlag.FP16); int8 (BuilderFlag.INT8, with FP16 also allowed so layers
without an INT8 kernel do not fall back to FP32). INT8 needs either a QDQ ONNX (explicit
quantization; see exporters.ort_quant with symmetric_activations=True) or calibration batches for an
IInt8EntropyCalibrator2 (implicit quantization) and/or an existing calibration cache.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edgecomp.errors import MissingDependencyError, UserInputError, VerificationError
from edgecomp.io import atomic_path, write_bytes
from edgecomp.exporters.calib_data import check_sample_shape, to_batches
from edgecomp.exporters.onnx_check import TensorSpec, graph_inputs, is_qdq, load_onnx_checked
from edgecomp.exporters.trt_calibrator import cuda_check, load_cudart, make_entropy_calibrator
from edgecomp.optional import install_hint, require

PRECISIONS = ("fp32", "fp16", "int8")
LOG_LEVELS = ("verbose", "info", "warning", "error")


class TensorRTUnavailableError(MissingDependencyError):
    """No TensorRT or no CUDA GPU here; the equivalent trtexec script was written for the target."""

    def __init__(self, reason: str, script_path: Path, command: Sequence[str]):
        message = (
            f"cannot build a TensorRT engine on this host: {reason}. TensorRT engines are specific to the GPU and "
            f"TensorRT version they are built with, so build it on the target device: copy the ONNX file and "
            f"{script_path} there and run `sh {script_path.name}` (it runs: {shlex.join(command)}). "
            f"To build from Python on the target, install `{install_hint('tensorrt')}`"
        )
        Exception.__init__(self, message)
        self.install = install_hint("tensorrt")
        self.reason = reason
        self.script_path = script_path
        self.command = list(command)


@dataclass
class EngineBuildResult:
    path: Path
    size_bytes: int
    precision: str
    tensorrt_version: str
    build_seconds: float
    workspace_mb: int
    input_name: str
    min_shape: tuple[int, ...] | None
    opt_shape: tuple[int, ...] | None
    max_shape: tuple[int, ...] | None
    explicit_quantization: bool
    timing_cache: Path | None = None
    calibration_cache: Path | None = None
    io_tensors: dict[str, dict] = field(default_factory=dict)
    trtexec: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def _shape_arg(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str = "fp16",
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    input_name: str = "input",
    min_shape: Sequence[int] | None = None,
    opt_shape: Sequence[int] | None = None,
    max_shape: Sequence[int] | None = None,
    calibration_cache: str | Path | None = None,
) -> list[str]:
    """The trtexec argv that builds the same engine as build_engine with these settings."""
    if precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if precision == "fp16":
        cmd.append("--fp16")
    elif precision == "int8":
        cmd += ["--int8", "--fp16"]
        if calibration_cache:
            cmd.append(f"--calib={calibration_cache}")
    cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    shapes = (min_shape, opt_shape, max_shape)
    if any(s is not None for s in shapes):
        if any(s is None for s in shapes):
            raise UserInputError("give all of min/opt/max shapes or none")
        for flag, shape in zip(("minShapes", "optShapes", "maxShapes"), shapes):
            cmd.append(f"--{flag}={input_name}:{_shape_arg(shape)}")
    return cmd


def script_path_for(onnx_path: str | Path, engine_path: str | Path | None = None) -> Path:
    """`<engine stem>.trtexec.sh` (`<onnx stem>` without an engine path) in the ONNX file's folder."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{Path(engine_path or onnx_path).stem}.trtexec.sh")


def write_trtexec_script(onnx_path: str | Path, command: Sequence[str], reason: str | None = None, *,
                         engine_path: str | Path | None = None) -> Path:
    """Write script_path_for(onnx_path, engine_path) beside the ONNX file (atomically, executable); return its path.

    The script changes to its own directory first, so relative file names in `command` work after
    the ONNX file and the script are copied together to the target.
    """
    path = script_path_for(onnx_path, engine_path)
    lines = [
        "#!/bin/sh",
        "# Build the TensorRT engine on the target device (engines are specific to its GPU and TensorRT version).",
        "# Generated by edgecomp" + (f" because: {reason}" if reason else "") + ".",
        "set -e",
        'cd "$(dirname "$0")"',
        shlex.join(command),
        "",
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
        os.chmod(tmp, 0o755)
    return path


def _tensorrt_or_reason():
    """(tensorrt module, None) when engines can be built here, else (None, why not)."""
    try:
        trt = require("tensorrt")
    except MissingDependencyError as exc:
        return None, f"the tensorrt Python package is not installed ({exc.__cause__})"
    try:
        cudart = load_cudart()
    except MissingDependencyError:
        return trt, None  # the builder itself reports a missing GPU; cuda-python is only needed to calibrate
    try:
        count = cuda_check(cudart, cudart.cudaGetDeviceCount())
    except Exception as exc:
        return None, f"no CUDA GPU is usable ({exc})"
    if not count:
        return None, "no CUDA GPU is visible"
    return trt, None


def _capturing_logger(trt, level: str):
    severities = {
        "verbose": trt.ILogger.Severity.VERBOSE,
        "info": trt.ILogger.Severity.INFO,
        "warning": trt.ILogger.Severity.WARNING,
        "error": trt.ILogger.Severity.ERROR,
    }
    tags = {
        trt.ILogger.Severity.INTERNAL_ERROR: "F",
        trt.ILogger.Severity.ERROR: "E",
        trt.ILogger.Severity.WARNING: "W",
        trt.ILogger.Severity.INFO: "I",
        trt.ILogger.Severity.VERBOSE: "V",
    }

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.min_severity = severities[level]
            self.records: list[str] = []

        def log(self, severity, msg):
            # Severity values grow with verbosity: INTERNAL_ERROR=0 ... VERBOSE=4.
            if int(severity) <= int(self.min_severity):
                self.records.append(f"[{tags.get(severity, '?')}] {msg}")

    return CapturingLogger()


def _profile_shapes(spec, min_batch: int, opt_batch: int, max_batch: int):
    if not spec.dynamic_batch:
        return None, None, None
    rest = spec.dims[1:]
    if any(not isinstance(d, int) for d in rest):
        raise UserInputError(f"input {spec.name} has dynamic non-batch dims {spec.dims}; export with a fixed shape")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UserInputError(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}"
        )
    return tuple((b, *rest) for b in (min_batch, opt_batch, max_batch))


@dataclass(frozen=True)
class _Plan:
    """What a build needs, checked before looking for TensorRT: the input, its profile, INT8 mode, the command."""

    spec: TensorSpec
    shapes: tuple
    explicit: bool
    calib_cache: Path | None
    batches: list | None
    command: list[str]


def _plan(onnx_path: Path, engine_path: Path, *, precision: str, workspace_mb: int, timing_cache, calibration,
          calibration_cache, calibration_batch_size: int, min_batch: int, opt_batch: int, max_batch: int) -> _Plan:
    if precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_mb <= 0:
        raise UserInputError(f"workspace_mb must be positive, got {workspace_mb}")
    model = load_onnx_checked(onnx_path)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserInputError(f"{onnx_path}: engine building supports one-input models, this one has {len(inputs)}")
    spec = inputs[0]
    shapes = _profile_shapes(spec, min_batch, opt_batch, max_batch)
    explicit = is_qdq(model)
    calib_cache = None
    batches = None
    if precision == "int8" and not explicit:
        calib_cache = Path(calibration_cache) if calibration_cache else engine_path.with_suffix(".calib")
        if calibration is None and not calib_cache.is_file():
            raise UserInputError(
                "INT8 needs calibration data, an existing calibration cache, or a QDQ-quantized ONNX "
                "(exporters.quantize_int8(..., symmetric_activations=True))"
            )
        if calibration is not None:
            fixed = spec.dims[0] if not spec.dynamic_batch else None
            batches = to_batches(calibration, fixed or calibration_batch_size)
            if len(batches) > 1 and len(batches[-1]) != len(batches[0]):
                batches = batches[:-1]  # the calibrator has one batch size
            check_sample_shape(batches, spec.dims, f"{onnx_path.name}'s input")
    # Paths relative to the ONNX file's folder: the script runs there, also after being copied to the target.
    here = onnx_path.resolve().parent

    def rel(p):
        return None if p is None else os.path.relpath(Path(p).resolve(), here)

    command = trtexec_command(
        onnx_path.name,
        rel(engine_path),
        precision=precision,
        workspace_mb=workspace_mb,
        timing_cache=rel(timing_cache),
        input_name=spec.name,
        min_shape=shapes[0],
        opt_shape=shapes[1],
        max_shape=shapes[2],
        calibration_cache=rel(calib_cache),
    )
    return _Plan(spec, shapes, explicit, calib_cache, batches, command)


def engine_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str = "fp16",
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    calibration_cache: str | Path | None = None,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
) -> list[str]:
    """The trtexec argv that build_engine with these settings runs as (paths relative to the ONNX file's folder,
    [trtexec, --onnx=..., --saveEngine=..., flags...]), for building the engine elsewhere."""
    return _plan(Path(onnx_path), Path(engine_path), precision=precision, workspace_mb=workspace_mb,
                 timing_cache=timing_cache, calibration=None, calibration_cache=calibration_cache,
                 calibration_batch_size=1, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch).command


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str = "fp16",
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    calibration=None,
    calibration_cache: str | Path | None = None,
    calibration_batch_size: int = 32,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    log_level: str = "info",
) -> EngineBuildResult:
    """Parse `onnx_path`, build a serialized engine at `engine_path` (atomic) and check it deserializes.

    timing_cache: file of kernel timings reused across builds (read if present, written after).
    calibration: INT8 calibration inputs (array or iterable of batches) for a non-QDQ model;
    calibration_cache: where the calibrator reads/writes its ranges (default `<engine>.calib`).
    min/opt/max_batch: the optimization profile when the ONNX input has a dynamic batch axis.
    Without TensorRT or a GPU: TensorRTUnavailableError, after writing script_path_for(onnx_path, engine_path).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if log_level not in LOG_LEVELS:
        raise UserInputError(f"log_level must be one of {LOG_LEVELS}, got {log_level!r}")
    plan = _plan(onnx_path, engine_path, precision=precision, workspace_mb=workspace_mb, timing_cache=timing_cache,
                 calibration=calibration, calibration_cache=calibration_cache,
                 calibration_batch_size=calibration_batch_size, min_batch=min_batch, opt_batch=opt_batch,
                 max_batch=max_batch)
    spec, shapes, explicit, calib_cache, batches, command = (
        plan.spec, plan.shapes, plan.explicit, plan.calib_cache, plan.batches, plan.command)

    def unavailable(reason: str) -> TensorRTUnavailableError:
        script = write_trtexec_script(onnx_path, command, reason, engine_path=engine_path)
        return TensorRTUnavailableError(reason, script, command)

    trt, reason = _tensorrt_or_reason()
    if trt is None:
        raise unavailable(reason)
    logger = _capturing_logger(trt, log_level)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # pybind11 raises TypeError when the builder cannot initialise CUDA
        raise unavailable(f"TensorRT could not create a builder ({exc})") from exc

    start = time.perf_counter()
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserInputError(f"TensorRT cannot parse {onnx_path}: {errors or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if shapes[0] is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(spec.name, shapes[0], shapes[1], shapes[2])
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    calibrator = None
    try:
        if precision == "int8" and not explicit:
            calib_batches = batches or [_placeholder_batch(spec, calibration_batch_size)]
            calibrator = make_entropy_calibrator(trt, calib_batches, spec.name, calib_cache)
            config.int8_calibrator = calibrator
            if shapes[0] is not None:
                # Calibration runs at a fixed shape: the calibration profile pins the batch size.
                fixed_shape = tuple(calib_batches[0].shape)
                calib_profile = builder.create_optimization_profile()
                calib_profile.set_shape(spec.name, fixed_shape, fixed_shape, fixed_shape)
                config.set_calibration_profile(calib_profile)
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        errors = [r for r in logger.records if r.startswith(("[E]", "[F]"))]
        raise VerificationError(f"TensorRT failed to build {onnx_path}: {' | '.join(errors[-5:]) or 'see the log'}")
    build_seconds = time.perf_counter() - start

    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise VerificationError("TensorRT built an engine it cannot deserialize")
    io_tensors = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        io_tensors[name] = {
            "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
            "dtype": str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1],
        }
    write_bytes(engine_path, bytes(serialized))
    if cache is not None:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))

    return EngineBuildResult(
        path=engine_path,
        size_bytes=engine_path.stat().st_size,
        precision=precision,
        tensorrt_version=trt.__version__,
        build_seconds=build_seconds,
        workspace_mb=int(workspace_mb),
        input_name=spec.name,
        min_shape=shapes[0],
        opt_shape=shapes[1],
        max_shape=shapes[2],
        explicit_quantization=explicit,
        timing_cache=Path(timing_cache) if timing_cache is not None else None,
        calibration_cache=calib_cache if calib_cache is not None and calib_cache.is_file() else None,
        io_tensors=io_tensors,
        trtexec=command,
        log=list(logger.records),
    )


def _placeholder_batch(spec, batch_size: int):
    """Shape-only batch for a calibrator that will read its ranges from the cache instead of data."""
    import numpy as np

    batch = spec.dims[0] if not spec.dynamic_batch else batch_size
    return np.zeros((batch, *spec.dims[1:]), dtype=np.float32)
