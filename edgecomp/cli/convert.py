"""`edgecomp convert`: export a model or a compress OUTDIR to ONNX, a TensorRT engine or an ORT mobile model.

ONNX always comes first (BatchNorm folded, checked against PyTorch in onnxruntime); TensorRT builds
from it (INT8 from a QDQ model quantized here), ORT converts it (after INT8 quantization if asked).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgecomp.cli.common import (COUNT, POSITIVE, OutputPath, device_options, emit, json_option, model_options, parse_input_shape, resolve_profile,
                                 trust_code_option)
from edgecomp.errors import UserInputError
from edgecomp.io import to_jsonable
from edgecomp.exporters.calib_data import calibration_from_spec

FORMATS = ("onnx", "tensorrt", "ort")
SUFFIXES = {"onnx": (".onnx",), "tensorrt": (".engine", ".plan", ".trt"), "ort": (".ort",)}
PRECISIONS = {"onnx": ("fp32", "int8"), "ort": ("fp32", "int8"), "tensorrt": ("fp32", "fp16", "int8")}
RUNTIME_FORMATS = {"tensorrt": ("onnx", "tensorrt"), "onnxruntime": ("onnx", "ort")}


def _layout(out: str, fmt: str) -> tuple[Path, str]:
    """-o names the artifact file when it has the format's suffix, else a directory (artifact stem 'model')."""
    path = Path(out)
    if path.suffix.lower() in SUFFIXES[fmt]:
        return path.parent, path.stem
    if path.exists() and not path.is_dir():
        raise UserInputError(f"-o {out}: expected a directory or a file ending in {'/'.join(SUFFIXES[fmt])}")
    return path, "model"


def _load(target: str, weights, trust_pickle: bool):
    """(LoadedModel or None, recipe or None, its model.onnx or None). A compress OUTDIR is not rebuilt
    here: its model.onnx needs no code, and _first_onnx rebuilds the PyTorch model only when it must."""
    from edgecomp.factor.recipe import is_outdir_target, read_recipe
    from edgecomp.models import load_model
    from edgecomp.outdir import ONNX_FILE

    if is_outdir_target(target, weights):
        stored = Path(target) / ONNX_FILE
        return None, read_recipe(target), stored if stored.is_file() else None
    return load_model(target, weights, trust_pickle=trust_pickle), None, None


def _known_shape(loaded, recipe) -> tuple[int, ...] | None:
    if loaded is not None and loaded.input_shape:
        return tuple(loaded.input_shape)
    if recipe is not None and recipe.get("input_shape"):
        return tuple(int(d) for d in recipe["input_shape"])
    return None


def _first_onnx(target, loaded, stored, onnx_path: Path, shape, *, trust_code: bool, trust_pickle: bool, **export):
    """The ONNX file every format starts from: the OUTDIR's model.onnx when it is the export asked for (no
    code runs), else a new export of the PyTorch model (an OUTDIR's is rebuilt only as its recipe and
    --trust-code / --trust-pickle allow: edgecomp.factor.recipe)."""
    from edgecomp.factor import load_compressed
    from edgecomp.exporters.from_outdir import outdir_check, reuse_blocker, reuse_onnx
    from edgecomp.exporters.onnx_export import export_onnx

    blocker = None
    if stored is not None:
        blocker = reuse_blocker(stored, input_shape=shape, opset=export["opset"], dynamic_batch=export["dynamic_batch"],
                                simplify=export["simplify"])
        if blocker is None:
            return reuse_onnx(stored, onnx_path, input_shape=shape, metadata=export["metadata"],
                              check=outdir_check(target))
    if loaded is None:
        try:
            loaded = load_compressed(target, trust_code=trust_code, trust_pickle=trust_pickle)
        except UserInputError as exc:
            if blocker is None:
                raise
            raise UserInputError(f"{blocker} needs a new export from the PyTorch model: {exc}") from None
    return export_onnx(loaded.module, onnx_path, shape, **export)


def _written(report: dict) -> list[Path]:
    """The files this conversion wrote (recorded in the manifest of an output directory they are in)."""
    paths = [report["onnx"].path]
    if report.get("quantization"):
        paths.append(report["quantization"].path)
    if report.get("mobile"):
        paths += [report["mobile"].ort_path, report["mobile"].config_path]
    if report.get("engine"):
        paths.append(report["engine"].path)
    if report.get("trtexec_script"):
        paths.append(Path(report["trtexec_script"]))
    return paths


def _precision(fmt: str, precision: str | None, profile) -> str:
    if profile is not None:
        allowed = RUNTIME_FORMATS.get(profile.runtime, FORMATS)
        if fmt not in allowed:
            raise UserInputError(
                f"device {profile.name} runs {profile.runtime}; use --format {' or '.join(allowed)}, not {fmt}"
            )
        if precision is None:
            precision = profile.default_precision if profile.default_precision in PRECISIONS[fmt] else "fp32"
        elif precision not in profile.precisions:
            raise UserInputError(f"device {profile.name} supports {', '.join(profile.precisions)}, not {precision}")
    if precision is None:
        precision = "fp16" if fmt == "tensorrt" else "fp32"
    if precision not in PRECISIONS[fmt]:
        raise UserInputError(f"--format {fmt} supports --precision {'/'.join(PRECISIONS[fmt])}, not {precision}")
    return precision


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _human(report: dict) -> None:
    o = report["onnx"]
    if o.get("reused_from"):
        check = "checked against PyTorch when it was written"
        if o.get("relative_error") is not None:
            check += f": relative {o['relative_error']:.2e} <= {o['tolerance']:.0e}"
        click.echo(
            f"onnx    {o['path']}  ({_kib(o['size_bytes'])}, opset {o['opset']}, "
            f"{'dynamic' if o['dynamic_batch'] else 'fixed'} batch)\n"
            f"        from {o['reused_from']} without rebuilding the model ({check})"
        )
    else:
        _human_export(o)
    _human_rest(report)


def _human_export(o: dict) -> None:
    click.echo(
        f"onnx    {o['path']}  ({_kib(o['size_bytes'])}, opset {o['opset']}, "
        f"{'dynamic' if o['dynamic_batch'] else 'fixed'} batch, {o['folded_batchnorms']} BN folded)\n"
        f"        check vs PyTorch: max abs {o['max_abs_error']:.2e}, relative {o['relative_error']:.2e} "
        f"<= {o['tolerance']:.0e} on {o['check_batch']} samples"
    )


def _human_rest(report: dict) -> None:
    q = report.get("quantization")
    if q:
        line = (
            f"int8    {q['path']}  ({_kib(q['size_bytes'])}, {q['calibrate_method']}, "
            f"{q['calibration_samples']} calibration samples)"
        )
        if q["top1_agreement"] is not None:
            agreement = 100 * q["top1_agreement"]
            line += f"\n        top-1 agreement with float {agreement:.2f}% on {q['eval_samples']} samples"
        if q["accuracy_drop_points"] is not None:
            line += (
                f"; accuracy {100 * q['float_accuracy']:.2f}% -> {100 * q['int8_accuracy']:.2f}% "
                f"({-q['accuracy_drop_points']:+.2f} points)"
            )
        if q.get("int8_settings"):
            low, high = (-64, 64) if q["int8_settings"]["reduce_range"] else (-127, 127)
            line += f"\n        weights in [{low}, {high}]: {q['int8_settings']['reason']}"
        click.echo(line)
    m = report.get("mobile")
    if m:
        click.echo(
            f"ort     {m['ort_path']}  ({_kib(m['size_bytes'])}); operators config {m['config_path']}\n"
            f"        check vs ONNX: {m['check']}"
        )
    e = report.get("engine")
    if e:
        click.echo(
            f"engine  {e['path']}  ({_kib(e['size_bytes'])}, {e['precision']}, TensorRT {e['tensorrt_version']}, "
            f"built in {e['build_seconds']:.1f} s)"
        )
    if report.get("trtexec_script"):
        click.echo(f"trtexec script for the target: {report['trtexec_script']}")
    if report.get("artifact"):
        click.echo(f"artifact: {report['artifact']}")


@click.command("convert")
@click.argument("target", metavar="MODEL_OR_OUTDIR")
@model_options
@trust_code_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Artifact to produce.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default=None,
    help="Default: the device's default precision, else fp16 for tensorrt and fp32 otherwise.",
)
@click.option("--calib-data", default=None, help="Data spec for INT8 calibration, e.g. fashion-mnist:train.")
@click.option(
    "--calib-samples",
    type=COUNT,
    default=256,
    show_default=True,
    help="Calibration samples (as many again are held out to measure INT8).",
)
@click.option(
    "--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True
)
@click.option("--opset", type=COUNT, default=17, show_default=True)
@click.option(
    "--no-dynamic-batch", is_flag=True, help="Fix the batch size to the input shape's instead of a symbolic axis."
)
@click.option("--simplify", is_flag=True, help="Simplify the ONNX graph with onnxslim (verified like the rest).")
@click.option("--tolerance", type=POSITIVE, default=1e-4, show_default=True, help="Max relative error of ONNX vs PyTorch.")
@click.option("--workspace-mb", type=COUNT, default=1024, show_default=True, help="TensorRT builder workspace.")
@click.option(
    "--timing-cache",
    type=OutputPath("file"),
    default=None,
    help="TensorRT timing cache file (read and updated).",
)
@device_options
@click.option("-o", "--output", "out", required=True, type=OutputPath("any"), help="Artifact file (by suffix) or output directory.")
@json_option
def command(
    target,
    weights,
    trust_pickle,
    input_shape,
    trust_code,
    fmt,
    precision,
    calib_data,
    calib_samples,
    calib_method,
    opset,
    no_dynamic_batch,
    simplify,
    tolerance,
    workspace_mb,
    timing_cache,
    device,
    profile_file,
    out,
    as_json,
):
    """Export MODEL_OR_OUTDIR (a model spec, or a directory written by `edgecomp compress`) for a runtime.

    \b
    Examples:
      edgecomp convert out/fmnist --format onnx -o out/fmnist/model.onnx
      edgecomp convert out/fmnist --format ort --precision int8 --calib-data fashion-mnist:train -o mobile/
      edgecomp convert zoo:resnet18 --format tensorrt --device jetson-orin-nano -o build/
    Without TensorRT and a GPU here, `--format tensorrt` writes the equivalent trtexec script beside
    the ONNX file for the target device and exits with code 2.
    """
    # Submodule imports: they resolve even where `exporters` is installed as a namespace package.
    from edgecomp.exporters.metadata import build_metadata, metadata_from_recipe
    from edgecomp.exporters.cpu_features import int8_runs_on
    from edgecomp.exporters.mobile import to_ort_format
    from edgecomp.outdir import ONNX_FILE, check_replaceable, is_outdir, record
    from edgecomp.exporters.ort_quant import quantize_int8
    from edgecomp.exporters.tensorrt import TensorRTUnavailableError, build_engine

    profile = resolve_profile(device, profile_file)
    precision = _precision(fmt, precision, profile)
    if precision == "int8" and not calib_data:
        raise UserInputError("--precision int8 needs --calib-data SPEC (representative inputs for calibration)")
    loaded, recipe, stored = _load(target, weights, trust_pickle)
    shape = parse_input_shape(input_shape) or _known_shape(loaded, recipe)
    if shape is None:
        raise UserInputError(f"the input shape of {target} is unknown: pass --input-shape N,C,H,W")
    device_name = profile.name if profile is not None else None
    if recipe is not None:
        metadata = metadata_from_recipe(recipe, device=device_name)
    else:
        metadata = build_metadata(source_model=target, weights=weights, device=device_name)
    calib = evaluation = labels = None
    if calib_data:
        calib, evaluation, labels = calibration_from_spec(calib_data, calib_samples, shape)

    folder, stem = _layout(out, fmt)
    int8_onnx = fmt == "onnx" and precision == "int8"
    onnx_path = folder / (f"{stem}.fp32.onnx" if int8_onnx else f"{stem}.onnx")
    quant_name = {"onnx": f"{stem}.onnx", "ort": f"{stem}.int8.onnx", "tensorrt": f"{stem}.qdq.onnx"}[fmt]
    if is_outdir(folder):  # writing into a compress output directory: never over its float model or your files
        if precision == "int8" and quant_name == ONNX_FILE:
            raise UserInputError(f"-o {out} would replace {folder / ONNX_FILE}, the directory's float model that "
                                 f"evaluate and verify run: name the INT8 file, e.g. -o {folder / 'model.int8.onnx'}")
        check_replaceable(folder, [onnx_path.name] + ([quant_name] if precision == "int8" else []))
    dynamic = not no_dynamic_batch
    check = None  # real samples make the numerical check representative; seeded noise otherwise
    if calib is not None and (dynamic or len(calib) >= shape[0]):
        check = calib[:8] if dynamic else calib[: shape[0]]
    onnx_result = _first_onnx(
        target,
        loaded,
        stored,
        onnx_path,
        shape,
        trust_code=trust_code,
        trust_pickle=trust_pickle,
        opset=opset,
        dynamic_batch=dynamic,
        metadata=metadata,
        check_inputs=check,
        tolerance=tolerance,
        simplify=simplify,
    )
    report = {"model": target, "format": fmt, "precision": precision, "device": device_name, "onnx": onnx_result}
    artifact, model_for_runtime = onnx_path, onnx_path

    if precision == "int8":
        quant = quantize_int8(
            onnx_path,
            folder / quant_name,
            calib,
            calibrate_method=calib_method,
            eval_data=evaluation,
            eval_labels=labels,
            symmetric_activations=fmt == "tensorrt",  # TensorRT's explicit quantization needs zero points of 0
            runs_on=int8_runs_on(  # sets the weight range: 7-bit where the CPU's int8 kernels saturate
                "tensorrt" if fmt == "tensorrt" else profile and profile.runtime,
                local=profile is None or profile.target.transport == "local",
            ),
        )
        report["quantization"] = quant
        artifact = model_for_runtime = quant.path

    if fmt == "ort":
        mobile_check = check if precision == "fp32" else evaluation[:8]
        mobile = to_ort_format(model_for_runtime, folder, check_inputs=mobile_check, tolerance=tolerance)
        report["mobile"] = mobile
        artifact = mobile.ort_path
    elif fmt == "tensorrt":
        engine_path = folder / f"{stem}.engine"
        if Path(out).suffix.lower() in SUFFIXES["tensorrt"]:
            engine_path = Path(out)
        try:
            engine = build_engine(
                model_for_runtime,
                engine_path,
                precision=precision,
                workspace_mb=workspace_mb,
                timing_cache=timing_cache,
            )
        except TensorRTUnavailableError as exc:
            # Report what was produced (the ONNX and the script for the target), then fail with exit code 2.
            report.update(artifact=None, trtexec_script=exc.script_path, trtexec=exc.command)
            record(_written(report), by="convert")
            emit(to_jsonable(report), as_json, _human)
            raise
        report["engine"] = engine
        artifact = engine.path

    report["artifact"] = artifact
    report["size_bytes"] = Path(artifact).stat().st_size
    record(_written(report), by="convert")
    emit(to_jsonable(report), as_json, _human)
