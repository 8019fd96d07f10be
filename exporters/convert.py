"""One conversion for every caller (the `convert` command, the `export` pipeline, the harness, the API).

A PyTorch model, an ONNX file or an edgecomp output directory becomes a verified float ONNX file,
then (precision "int8") a static INT8 QDQ model, then (format "ort") an ORT-format mobile model or
(format "tensorrt") a TensorRT engine, or the trtexec script that builds the engine on the device.

File names, in FOLDER with stem STEM: `out` is either a file, FOLDER/STEM.onnx (or STEM.int8.onnx,
STEM.ort, STEM.engine/.plan/.trt, which is then the engine's exact path), or a directory, FOLDER,
with STEM "model":

    STEM.onnx           the float model, checked against PyTorch in onnxruntime (exporters.onnx_export)
    STEM.int8.onnx      precision "int8": static QDQ, measured against the float model (exporters.ort_quant)
    STEM.ort            format "ort", with STEM.required_operators.config, checked against its ONNX
    STEM.engine         format "tensorrt": built here, or by `engine_builder` (e.g. on the target)
    STEM.trtexec.sh     format "tensorrt" when no engine could be built: the command to run on the device

Every file is written atomically. In an edgecomp output directory only files edgecomp wrote there are
replaced, and what is written is recorded in its manifest (edgecomp.outdir).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

from edgecomp.errors import EdgecompError, UserInputError

if TYPE_CHECKING:
    from torch import nn

    from edgecomp.exporters.cpu_features import Int8Settings
    from edgecomp.exporters.from_outdir import OutputDir, ReusedOnnx
    from edgecomp.exporters.mobile import MobileResult
    from edgecomp.exporters.onnx_export import OnnxExportResult
    from edgecomp.exporters.ort_quant import QuantResult
    from edgecomp.exporters.tensorrt import EngineBuildResult

FORMATS = ("onnx", "tensorrt", "ort")
PRECISIONS = {"onnx": ("fp32", "int8"), "ort": ("fp32", "int8"), "tensorrt": ("fp32", "fp16", "int8")}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# Calibration samples drawn from a data spec (as many again are held out to measure the INT8 model).
CALIBRATION_SAMPLES = 256
CHECK_SAMPLES = 8  # real samples for the numerical checks of the ONNX and .ort files, when there are any

Shape = Sequence[int]
# Builds an engine elsewhere (e.g. on the target over its transport): called with the ONNX file, the
# trtexec argv (paths relative to the ONNX file's folder: [trtexec, --onnx=..., --saveEngine=..., flags...])
# and the engine path to write; an EdgecompError it raises leaves the trtexec script instead.
EngineBuilder = Callable[[Path, list, Path], Any]
Source = Union["nn.Module", str, os.PathLike, "OutputDir"]


@dataclass(frozen=True)
class ConvertResult:
    """What convert() wrote and what it measured.

    artifact is what a runtime loads: the engine, the .ort, the INT8 or the float ONNX file; None when
    the engine is left to the device (trtexec_script, trtexec_command and engine_error say how and why).
    """

    format: str
    precision: str
    onnx_path: Path
    artifact: Path | None
    onnx: OnnxExportResult | ReusedOnnx  # the float ONNX and its check against PyTorch
    int8_onnx_path: Path | None = None
    ort_path: Path | None = None
    ort_config_path: Path | None = None
    engine_path: Path | None = None
    trtexec_script: Path | None = None
    trtexec_command: tuple[str, ...] | None = None
    engine_error: str | None = None
    quantization: QuantResult | None = None
    mobile: MobileResult | None = None
    engine: EngineBuildResult | None = None  # a build on this machine (None when engine_builder built it)

    @property
    def int8_settings(self) -> Int8Settings | None:
        """The INT8 weight range chosen and why (exporters.cpu_features), None for a float artifact."""
        return None if self.quantization is None else self.quantization.int8_settings

    @property
    def relative_error(self) -> float | None:
        """max |onnx - torch| / max |torch| of the float ONNX (None: reused, its check unknown)."""
        return self.onnx.relative_error

    @property
    def max_abs_error(self) -> float | None:
        return self.onnx.max_abs_error

    @property
    def written(self) -> list[Path]:
        """Every file this conversion wrote."""
        paths = [self.onnx_path, self.int8_onnx_path, self.ort_path, self.ort_config_path, self.engine_path,
                 self.trtexec_script]
        return [p for p in paths if p is not None]


@dataclass(frozen=True)
class _Layout:
    folder: Path
    stem: str
    engine: Path

    def file(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"


def _layout(out: str | os.PathLike, fmt: str, precision: str) -> _Layout:
    """OUT as a file (its name gives the stem; an engine suffix is the engine's path) or a directory."""
    path = Path(out)
    suffix = path.suffix.lower()
    owner = {".ort": "ort", **{s: "tensorrt" for s in ENGINE_SUFFIXES}}.get(suffix)
    if suffix == ".onnx" or owner == fmt:
        stem = path.stem
        if precision == "int8" and stem.endswith(".int8"):
            stem = stem[: -len(".int8")]
        engine = path if owner == "tensorrt" else path.parent / f"{stem}.engine"
        return _Layout(path.parent, stem, engine)
    if owner is not None:
        raise UserInputError(f"{out} names a {suffix} file, which format {fmt!r} does not write; "
                             f"give a .onnx file or a directory")
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{out}: expected a directory or a file ending in .onnx"
                             + ("" if fmt == "onnx" else f" or {'/'.join(_suffixes(fmt))}"))
    return _Layout(path, "model", path / "model.engine")


def _suffixes(fmt: str) -> tuple[str, ...]:
    return {"ort": (".ort",), "tensorrt": ENGINE_SUFFIXES}.get(fmt, ())


def _default_precision(fmt: str, precision: str | None) -> str:
    if fmt not in FORMATS:
        raise UserInputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision is None:
        precision = "fp16" if fmt == "tensorrt" else "fp32"
    if precision not in PRECISIONS[fmt]:
        raise UserInputError(f"--format {fmt} supports --precision {'/'.join(PRECISIONS[fmt])}, not {precision}")
    return precision


def for_device(fmt: str, precision: str | None, profile) -> tuple[str, str]:
    """(precision, runs_on) to convert to `fmt` for a device profile (None: this host).

    precision: the one asked for, checked against the profile's, else the profile's default when `fmt`
    supports it, else fp16 for tensorrt and fp32 otherwise. runs_on (for INT8 weights): "gpu" for
    TensorRT, "host" for this host or a device measured through it, "unknown" for a remote CPU.
    """
    from edgecomp.exporters.cpu_features import int8_runs_on

    if profile is None:
        return _default_precision(fmt, precision), int8_runs_on("tensorrt" if fmt == "tensorrt" else None, local=True)
    allowed = {"tensorrt": ("onnx", "tensorrt"), "onnxruntime": ("onnx", "ort")}.get(profile.runtime, FORMATS)
    if fmt not in allowed:
        raise UserInputError(f"device {profile.name} runs {profile.runtime}; use --format {' or '.join(allowed)}, "
                             f"not {fmt}")
    if precision is None:
        precision = profile.default_precision if profile.default_precision in PRECISIONS.get(fmt, ()) else "fp32"
    elif precision not in profile.precisions:
        raise UserInputError(f"device {profile.name} supports {', '.join(profile.precisions)}, not {precision}")
    runtime = "tensorrt" if fmt == "tensorrt" else profile.runtime
    return (_default_precision(fmt, precision),
            int8_runs_on(runtime, local=profile.target.transport == "local"))


def _calibration(calibration, samples: int, shape: tuple[int, ...]):
    """(calibration x, evaluation x or None, evaluation labels or None) as float32 arrays."""
    from edgecomp.exporters.calib_data import calibration_from_spec, concat, to_batches

    if isinstance(calibration, str):
        return calibration_from_spec(calibration, samples, shape)
    return concat(to_batches(calibration)), None, None


def _source(source, input_shape):
    """(kind, the module / .onnx path / OutputDir, input shapes or None, default metadata)."""
    from torch import nn

    from edgecomp.exporters import metadata as md
    from edgecomp.exporters.from_outdir import OutputDir
    from edgecomp.exporters.onnx_export import input_shapes

    shapes = None if input_shape is None else input_shapes(input_shape)
    if isinstance(source, nn.Module):
        if shapes is None:
            raise UserInputError("input_shape is needed to export a PyTorch model, e.g. input_shape=(1, 3, 224, 224)")
        return "module", source, shapes, {}
    if not isinstance(source, OutputDir):
        if not isinstance(source, (str, os.PathLike)):
            raise UserInputError(f"cannot convert a {type(source).__name__}: give an nn.Module, an .onnx file "
                                 "or an edgecomp output directory")
        path = Path(source).expanduser()
        if not path.exists():
            raise UserInputError(f"{source} not found")
        if not path.is_dir():
            if path.suffix.lower() != ".onnx":
                raise UserInputError(f"{source}: expected an .onnx file or an edgecomp output directory")
            return "onnx", path, shapes, {}
        source = OutputDir(path)
    recipe = source.recipe()
    if shapes is None and not recipe.get("input_shape"):
        raise UserInputError(f"{source.path}: the recipe has no input_shape; pass input_shape")
    shapes = shapes or [tuple(int(d) for d in recipe["input_shape"])]
    return "outdir", source, shapes, md.metadata_from_recipe(recipe)


def _onnx_shape(path: Path) -> tuple[int, ...] | None:
    """A one-input graph's shape with a symbolic batch as 1; None when a non-batch dim is symbolic."""
    from edgecomp.exporters.onnx_check import graph_inputs, load_onnx_checked

    inputs = graph_inputs(load_onnx_checked(path))
    dims = inputs[0].dims if len(inputs) == 1 else ()
    if not dims or not all(isinstance(d, int) for d in dims[1:]):
        return None
    return (dims[0] if isinstance(dims[0], int) else 1, *dims[1:])


def _float_onnx(kind: str, source, onnx_path: Path, shapes, *, opset: int, dynamic_batch: bool, simplify: bool,
                metadata: Mapping[str, Any], check, tolerance: float):
    from edgecomp.exporters.from_outdir import onnx_from_outdir, reuse_onnx
    from edgecomp.exporters.onnx_check import is_qdq, load_onnx_checked
    from edgecomp.exporters.onnx_export import export_onnx

    if kind == "module":
        return export_onnx(source, onnx_path, shapes if len(shapes) > 1 else shapes[0], opset=opset,
                           dynamic_batch=dynamic_batch, metadata=metadata, check_inputs=check, tolerance=tolerance,
                           simplify=simplify)
    if kind == "outdir":
        if len(shapes) != 1:
            raise UserInputError(f"{source.path}: an output directory's model has one input; give one input_shape")
        return onnx_from_outdir(source, onnx_path, input_shape=shapes[0], opset=opset, dynamic_batch=dynamic_batch,
                                simplify=simplify, metadata=metadata, check_inputs=check, tolerance=tolerance)
    if is_qdq(load_onnx_checked(source)):
        raise UserInputError(f"{source} is already quantized (INT8): convert its float model instead")
    return reuse_onnx(source, onnx_path, input_shape=None, metadata=metadata, keep_metadata=True)


def _quiet(_message: str) -> None:
    pass


def convert(
    source: Source,
    out: str | os.PathLike,
    *,
    input_shape: Shape | Sequence[Shape] | None = None,
    format: str = "onnx",
    precision: str | None = None,
    calibration=None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    calibrate_method: str = "minmax",
    runs_on=None,
    opset: int = 17,
    dynamic_batch: bool = True,
    simplify: bool = False,
    tolerance: float = 1e-4,
    metadata: Mapping[str, Any] | None = None,
    workspace_mb: int = 1024,
    timing_cache: str | os.PathLike | None = None,
    engine_builder: EngineBuilder | None = None,
    log: Callable[[str], None] = _quiet,
) -> ConvertResult:
    """Convert `source` into the files of `format` under `out` (see the module docstring), each one checked.

    source: an nn.Module (input_shape required: one shape (N, C, ...), or one per input for a model with
    several inputs, which then converts to ONNX only), an .onnx file (a float model; copied to STEM.onnx),
    an edgecomp output directory (its model.onnx is used when it is the export asked for, so no code
    runs; OutputDir(path, trust_code=...) allows rebuilding its model otherwise).
    precision: fp32 | int8 (| fp16 for tensorrt); None: fp16 for tensorrt, fp32 otherwise. INT8 needs
    `calibration`: a data spec ("fashion-mnist:train": `calibration_samples` samples calibrate and as many
    again, held out, measure the INT8 model) or an (N, ...) array / iterable of batches (used as given,
    and measured in-sample). Real samples also make the ONNX and .ort checks representative.
    runs_on: what runs an INT8 model, which sets its weight range (exporters.cpu_features): "host"
    (default), "unknown", or a CpuInfo; TensorRT always runs it on the GPU.
    opset, dynamic_batch, simplify (onnxslim), tolerance (max relative error of the ONNX file vs PyTorch):
    the ONNX export (exporters.onnx_export); metadata: edgecomp.* entries to stamp (over the recipe's for an
    output directory). workspace_mb, timing_cache: the TensorRT build.
    engine_builder: builds the engine elsewhere instead of here (see EngineBuilder). When no engine can
    be built (no TensorRT or GPU here, or engine_builder's build fails), the trtexec script is written
    instead and the result says why (engine_error); nothing is raised for that, and `log` gets a line
    saying so. A build that fails here, with TensorRT present, raises its error.
    Returns a ConvertResult; raises UserInputError / VerificationError (nothing half-written) otherwise.
    """
    from edgecomp.outdir import check_replaceable, is_outdir, record

    precision = _default_precision(format, precision)
    if precision == "int8" and calibration is None:
        raise UserInputError("INT8 needs calibration data: pass calibration= (a data spec or an array of inputs)")
    kind, model, shapes, defaults = _source(source, input_shape)
    layout = _layout(out, format, precision)
    names = {"onnx": layout.file(".onnx"), "int8": layout.file(".int8.onnx"), "ort": layout.file(".ort"),
             "config": layout.file(".required_operators.config"), "engine": layout.engine,
             "script": layout.folder / f"{layout.engine.stem}.trtexec.sh"}
    wanted = ["onnx"] + (["int8"] if precision == "int8" else []) + {
        "onnx": [], "ort": ["ort", "config"], "tensorrt": ["engine", "script"]}[format]
    if is_outdir(layout.folder):  # an output directory: never over a file of the user's
        check_replaceable(layout.folder, [names[k].name for k in wanted])
    else:
        _check_onnx_siblings([names[k] for k in wanted], out, source if kind == "onnx" else None)
    if kind == "onnx":
        shapes = shapes or ([shape] if (shape := _onnx_shape(model)) else None)

    calib = evaluation = labels = check = None
    if calibration is not None:
        if not shapes or len(shapes) != 1:
            raise UserInputError("calibration data needs a model with one input of a known input_shape")
        calib, evaluation, labels = _calibration(calibration, calibration_samples, shapes[0])
        if dynamic_batch or len(calib) >= shapes[0][0]:
            check = calib[:CHECK_SAMPLES] if dynamic_batch else calib[: shapes[0][0]]
    onnx_result = _float_onnx(kind, model, names["onnx"], shapes, opset=opset, dynamic_batch=dynamic_batch,
                              simplify=simplify, metadata={**defaults, **(metadata or {})},
                              check=check if kind != "onnx" else None, tolerance=tolerance)
    found: dict[str, Any] = {"onnx": onnx_result}
    runtime_onnx = names["onnx"]
    try:
        if precision == "int8":
            runtime_onnx = _quantize(names, found, calib, evaluation, labels, format, calibrate_method, runs_on)
        if format == "ort":
            _to_ort(names, found, runtime_onnx, check if precision == "fp32" else
                    (evaluation if evaluation is not None else calib)[:CHECK_SAMPLES], tolerance)
        elif format == "tensorrt":
            _to_engine(names, found, runtime_onnx, shapes[0] if shapes else None, precision, workspace_mb,
                       timing_cache, engine_builder, log)
    finally:  # files written before a failure are kept (each is whole): the manifest lists them too
        record([p for p in _paths(names, found) if p.is_file()], by="convert")
    return _result(format, precision, names, found, runtime_onnx)


def _quantize(names, found, calib, evaluation, labels, fmt, method, runs_on) -> Path:
    from edgecomp.exporters.ort_quant import quantize_int8

    quant = quantize_int8(
        names["onnx"], names["int8"], calib, calibrate_method=method, eval_data=evaluation, eval_labels=labels,
        symmetric_activations=fmt == "tensorrt",  # TensorRT's explicit quantization needs zero points of 0
        runs_on="gpu" if fmt == "tensorrt" else (runs_on or "host"),
    )
    found["quantization"] = quant
    return quant.path


def _to_ort(names, found, onnx_path: Path, check, tolerance: float) -> None:
    from edgecomp.exporters.mobile import to_ort_format

    mobile = to_ort_format(onnx_path, names["ort"].parent, check_inputs=check, tolerance=tolerance,
                           name=names["ort"].stem)
    found["mobile"] = mobile


def _to_engine(names, found, onnx_path: Path, shape, precision, workspace_mb, timing_cache, engine_builder, log):
    """Build the engine (here, or with engine_builder); when that fails, leave the trtexec script and why."""
    from edgecomp.exporters.tensorrt import (TensorRTUnavailableError, build_engine, engine_command,
                                             write_trtexec_script)

    batch = shape[0] if shape else 1
    # The engine takes batches 1..max(8, N) and is tuned for the traced batch N.
    settings = dict(precision=precision, workspace_mb=workspace_mb, timing_cache=timing_cache, min_batch=1,
                    opt_batch=batch, max_batch=max(8, batch))
    command = engine_command(onnx_path, names["engine"], **settings)  # checks the settings first
    found["trtexec_command"] = tuple(command)
    try:
        if engine_builder is None:
            found["engine"] = build_engine(onnx_path, names["engine"], **settings)
        else:
            engine_builder(onnx_path, list(command), names["engine"])
        found["engine_path"] = names["engine"]
    except TensorRTUnavailableError as exc:
        found.update(trtexec_script=exc.script_path, engine_error=exc.reason)
        log(f"no TensorRT here ({exc.reason}); wrote {exc.script_path}: run it on the device")
    except EdgecompError as exc:
        if engine_builder is None:
            raise  # TensorRT is here and the build failed: that is the answer, not a script for elsewhere
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        script = write_trtexec_script(onnx_path, command, reason=f"building the engine failed: {reason}",
                                      engine_path=names["engine"])
        found.update(trtexec_script=script, engine_error=reason)
        log(f"could not build the engine ({reason}); wrote {script}: run it on the device")


def _written_by_edgecomp(path: Path) -> bool:
    """An ONNX file with edgecomp's metadata (what this function writes); False for anything else."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file we can read: not ours
        return False
    return any(prop.key.startswith("edgecomp.") for prop in model.metadata_props)


def _check_onnx_siblings(paths: list[Path], out, source) -> None:
    """Outside an output directory, the ONNX files written beside `out` (the float STEM.onnx beside an
    INT8, .ort or engine output; STEM.int8.onnx beside .ort or an engine) may replace only a file that
    edgecomp wrote, `out` itself, or the source being converted."""
    keep = {Path(out).resolve()} | ({Path(source).resolve()} if source is not None else set())
    for path in paths:
        if path.suffix == ".onnx" and path.exists() and path.resolve() not in keep and not _written_by_edgecomp(path):
            raise UserInputError(f"{path} exists and edgecomp did not write it; converting to {out} writes that file "
                                 "too: move it, or give another output name")


def _paths(names, found) -> list[Path]:
    paths = [names["onnx"]]
    if "quantization" in found:
        paths.append(found["quantization"].path)
    if "mobile" in found:
        paths += [found["mobile"].ort_path, found["mobile"].config_path]
    paths += [found[k] for k in ("engine_path", "trtexec_script") if k in found]
    return paths


def _result(fmt: str, precision: str, names, found, runtime_onnx: Path) -> ConvertResult:
    mobile, engine_path = found.get("mobile"), found.get("engine_path")
    if fmt == "tensorrt":
        artifact = engine_path
    else:
        artifact = mobile.ort_path if mobile is not None else runtime_onnx
    return ConvertResult(
        format=fmt,
        precision=precision,
        onnx_path=names["onnx"],
        artifact=artifact,
        onnx=found["onnx"],
        int8_onnx_path=found["quantization"].path if "quantization" in found else None,
        ort_path=None if mobile is None else mobile.ort_path,
        ort_config_path=None if mobile is None else mobile.config_path,
        engine_path=engine_path,
        trtexec_script=found.get("trtexec_script"),
        trtexec_command=found.get("trtexec_command"),
        engine_error=found.get("engine_error"),
        quantization=found.get("quantization"),
        mobile=mobile,
        engine=found.get("engine"),
    )
