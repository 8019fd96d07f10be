"""`edgecomp convert`: export a model or a compress OUTDIR to ONNX, a TensorRT engine or an ORT mobile model.

The command parses its options and calls edgecomp.exporters.convert.convert, which does the work (ONNX
first, BatchNorm folded and checked against PyTorch; then INT8, .ort or the engine), and prints its report.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgecomp.cli.common import (COUNT, POSITIVE, OutputPath, device_options, emit, json_option, model_options,
                                 parse_input_shape, resolve_profile, trust_code_option)
from edgecomp.errors import UserInputError
from edgecomp.exporters.convert import CALIBRATION_SAMPLES, FORMATS
from edgecomp.io import to_jsonable


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
    default=CALIBRATION_SAMPLES,
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
@click.option("-o", "--output", "out", required=True, type=OutputPath("any"), help="Output directory, or a file whose name gives the files' stem (an .engine/.plan/.trt file is the engine).")
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
    \b
    Files (-o DIR, or -o DIR/STEM.onnx for another stem than "model"): STEM.onnx (float),
    STEM.int8.onnx, STEM.ort, STEM.engine (-o may name it: .engine/.plan/.trt).
    Without TensorRT and a GPU here, `--format tensorrt` writes the equivalent trtexec script
    (STEM.trtexec.sh) beside the ONNX file for the target device and exits with code 2.
    """
    from edgecomp.exporters.convert import convert, for_device
    from edgecomp.exporters.from_outdir import OutputDir
    from edgecomp.exporters.metadata import DEVICE, build_metadata
    from edgecomp.exporters.tensorrt import TensorRTUnavailableError
    from edgecomp.factor.recipe import is_outdir_target
    from edgecomp.models import load_model

    profile = resolve_profile(device, profile_file)
    precision, runs_on = for_device(fmt, precision, profile)
    if precision == "int8" and not calib_data:
        raise UserInputError("--precision int8 needs --calib-data SPEC (representative inputs for calibration)")
    device_name = profile.name if profile is not None else None
    shape = parse_input_shape(input_shape)
    if is_outdir_target(target, weights):  # its model.onnx needs no code; the model is rebuilt only as allowed
        source, metadata = OutputDir(Path(target), trust_code=trust_code, trust_pickle=trust_pickle), {}
        if device_name:
            metadata[DEVICE] = device_name
    else:
        loaded = load_model(target, weights, trust_pickle=trust_pickle)
        source = loaded.module
        shape = shape or (tuple(loaded.input_shape) if loaded.input_shape else None)
        if shape is None:
            raise UserInputError(f"the input shape of {target} is unknown: pass --input-shape N,C,H,W")
        metadata = build_metadata(source_model=target, weights=weights, device=device_name)
    result = convert(
        source, out, input_shape=shape, format=fmt, precision=precision, calibration=calib_data,
        calibration_samples=calib_samples, calibrate_method=calib_method, runs_on=runs_on, opset=opset,
        dynamic_batch=not no_dynamic_batch, simplify=simplify, tolerance=tolerance, metadata=metadata,
        workspace_mb=workspace_mb, timing_cache=timing_cache,
    )
    report = _report(target, device_name, result)
    emit(to_jsonable(report), as_json, _human)
    if fmt == "tensorrt" and result.engine_path is None:  # exit code 2, after saying what was written
        raise TensorRTUnavailableError(result.engine_error, result.trtexec_script, result.trtexec_command)


def _report(target: str, device: str | None, result) -> dict:
    """The command's report (--json): what was written and checked, in the keys it has always had."""
    report = {"model": target, "format": result.format, "precision": result.precision, "device": device,
              "onnx": result.onnx}
    for key in ("quantization", "mobile", "engine"):
        if getattr(result, key) is not None:
            report[key] = getattr(result, key)
    if result.format == "tensorrt" and result.engine_path is None:
        report.update(artifact=None, trtexec_script=result.trtexec_script, trtexec=list(result.trtexec_command))
        return report
    report["artifact"] = result.artifact
    report["size_bytes"] = Path(result.artifact).stat().st_size
    return report
