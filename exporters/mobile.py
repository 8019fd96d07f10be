"""ONNX -> ORT format for ONNX Runtime Mobile, plus the operator config for a reduced-size build.

Uses onnxruntime.tools.convert_onnx_models_to_ort (the API behind
`python -m onnxruntime.tools.convert_onnx_models_to_ort`) with the "Fixed" optimization style: graph
optimizations are applied once at conversion and baked into the .ort file. The NCHWc layout
transform (x86-only) is excluded unless target_platform="amd64", so the file runs on ARM phones.
The `<stem>.required_operators.config` file lists the operators a minimal ORT build must include
(`build.sh --minimal_build --include_ops_by_config <file>`).

Check: a float model's .ort must match its ONNX within a relative tolerance. An INT8 (QDQ) model's
.ort runs other integer kernels than the ONNX session (the ARM .ort keeps int8 activations; x86
sessions shift them to uint8), whose requantization may round differently, so it is compared in
output quantization steps s (the scale of the DequantizeLinear that produces the output):
    error_steps = max |ort - onnx| / s  <= max_error_steps
and, for (batch, classes) outputs, top-1 must agree on every sample whose ONNX top-2 margin exceeds
the allowed error (2 * max_error_steps * s). The ONNX side runs exact integer kernels on any host
(exporters.ort_quant.int8_reference_session), so a CPU that would saturate cannot fail the check.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecomp.errors import UserInputError, VerificationError
from edgecomp.exporters.onnx_check import graph_inputs, is_qdq, load_onnx_checked
from edgecomp.exporters.ort_quant import int8_reference_session
from edgecomp.exporters.verify import compare_outputs, cpu_session, run_batched

TARGET_PLATFORMS = ("arm", "amd64")
# One step of requantization rounding per fused kernel, compounded through a few layers: 0-2 steps
# measured between the ARM .ort and the x86 ONNX session (zoo:resnet18, zoo:fmnist_cnn); a saturating
# kernel moves outputs by 10-30 steps.
MAX_INT8_ERROR_STEPS = 4.0


@dataclass
class MobileResult:
    ort_path: Path
    config_path: Path
    size_bytes: int
    onnx_size_bytes: int
    target_platform: str
    max_abs_error: float
    mean_abs_error: float
    relative_error: float
    tolerance: float
    required_operators: list[str] = field(default_factory=list)
    log: str = ""
    criterion: str = "relative"  # "relative" (float models) | "quantization_steps" (INT8 QDQ models)
    error_steps: float | None = None  # INT8: max |ort - onnx| in output quantization steps
    max_error_steps: float | None = None
    output_step: float | None = None  # INT8: the output's quantization step s (smallest over outputs)
    top1_agreement: float | None = None  # INT8, (batch, classes) outputs: fraction of samples with equal argmax
    check: str = ""  # the check in one line


def output_steps(model, reference) -> list[float]:
    """The quantization step of each graph output: the scalar scale of the DequantizeLinear producing it,
    else one int8 step of the reference output's range, (max - min) / 255."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    steps = []
    for spec, ref in zip(model.graph.output, reference):
        node = producers.get(spec.name)
        scale = None
        if node is not None and node.op_type == "DequantizeLinear" and node.input[1] in initializers:
            values = numpy_helper.to_array(initializers[node.input[1]])
            scale = float(values) if values.size == 1 else None
        span = float(np.max(ref) - np.min(ref)) if ref.size else 0.0
        steps.append(scale if scale else (span / 255.0 or 1.0))
    return steps


def quantized_agreement(reference, candidate, steps, max_error_steps: float) -> tuple[float, float | None, bool]:
    """(error_steps, top1_agreement, decisions_kept) of candidate vs reference outputs.

    error_steps = max over outputs k of max |c_k - r_k| / steps[k]. For a (batch, classes) first output,
    top1_agreement is the fraction of samples with equal argmax, and decisions_kept says that every
    sample whose reference top-2 margin exceeds 2 * max_error_steps * step kept its argmax.
    """
    error_steps = 0.0
    for r, c, step in zip(reference, candidate, steps):
        diff = np.abs(np.asarray(c, np.float64) - np.asarray(r, np.float64))
        if diff.size:
            worst = float(diff.max())
            error_steps = max(error_steps, float("inf") if np.isnan(worst) else worst / step)
    r, c = np.asarray(reference[0]), np.asarray(candidate[0])
    if r.ndim != 2 or r.shape[1] < 2:
        return error_steps, None, True
    same = r.argmax(1) == c.argmax(1)
    top2 = np.sort(r, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > 2 * max_error_steps * steps[0]
    return error_steps, float(same.mean()), bool(same[decisive].all())


def _read_operators(config: Path) -> list[str]:
    """'ai.onnx;17;Conv,Relu' lines -> ['ai.onnx:Conv', 'ai.onnx:Relu'] (comments skipped)."""
    ops = []
    for line in config.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(";")
        if len(parts) >= 3:
            ops.extend(f"{parts[0]}:{op.split('{')[0]}" for op in parts[2].split(",") if op)
    return sorted(set(ops))


def _check_inputs(spec, check_inputs) -> np.ndarray:
    if check_inputs is not None:
        return np.ascontiguousarray(np.asarray(check_inputs, dtype=np.float32))
    if any(not isinstance(d, int) for d in spec.dims[1:]):
        raise UserInputError(f"input {spec.name} has dynamic non-batch dims {spec.dims}: pass check_inputs")
    batch = spec.dims[0] if not spec.dynamic_batch else 2
    return np.random.default_rng(0).standard_normal((batch, *spec.dims[1:])).astype(np.float32)


def to_ort_format(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    target_platform: str = "arm",
    check_inputs: np.ndarray | None = None,
    tolerance: float = 1e-4,
    max_error_steps: float = MAX_INT8_ERROR_STEPS,
    name: str | None = None,
) -> MobileResult:
    """Convert `onnx_path` to `<out_dir>/<name>.ort` (+ `<name>.required_operators.config`), verified;
    `name` defaults to the ONNX file's stem.

    The .ort file is loaded in an onnxruntime InferenceSession and its outputs on `check_inputs`
    (default: seeded N(0, 1), batch 2 when the batch is dynamic) are compared with the ONNX model's;
    relative error (max abs error / max |ONNX output|) above `tolerance` raises VerificationError
    and neither file is kept. INT8 (QDQ) models are checked in output quantization steps instead
    (`max_error_steps` and top-1 agreement, see the module docstring).
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    if target_platform not in TARGET_PLATFORMS:
        raise UserInputError(f"target_platform must be one of {TARGET_PLATFORMS}, got {target_platform!r}")
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    model = load_onnx_checked(onnx_path)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserInputError(f"{onnx_path}: ORT conversion check supports one-input models, this one has {len(inputs)}")
    x = _check_inputs(inputs[0], check_inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name or onnx_path.stem

    with tempfile.TemporaryDirectory(prefix=f".{stem}.", suffix=".ort-tmp", dir=out_dir) as work:
        src = Path(work) / "src" / f"{stem}.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        built = Path(work) / "out"
        log = io.StringIO()
        tool_logger = logging.getLogger("ort_format_model.utils")
        previous_level = tool_logger.level
        tool_logger.setLevel(logging.WARNING)  # it logs an INFO line per config file to stderr
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(
                    src,
                    output_dir=built,
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=target_platform,
                )
        except Exception as exc:  # onnxruntime raises its own error types
            raise VerificationError(f"ORT format conversion of {onnx_path} failed: {exc}") from exc
        finally:
            tool_logger.setLevel(previous_level)
        ort_file = built / f"{stem}.ort"
        config = built / f"{stem}.required_operators.config"
        if not ort_file.is_file() or not config.is_file():
            raise VerificationError(f"ORT conversion produced no {ort_file.name}/{config.name}:\n{log.getvalue()}")

        quantized = is_qdq(model)
        reference = run_batched((int8_reference_session if quantized else cpu_session)(onnx_path), x)
        candidate = run_batched(cpu_session(ort_file), x)
        errors = compare_outputs(reference, candidate)
        int8 = {}
        if quantized:
            steps = output_steps(model, reference)
            error_steps, top1, kept = quantized_agreement(reference, candidate, steps, max_error_steps)
            top1_text = "" if top1 is None else f", top-1 agreement {100 * top1:.1f}% on {len(x)} samples"
            check = f"{error_steps:.3g} output steps <= {max_error_steps:g} (step {min(steps):.3g}){top1_text}"
            if not (error_steps <= max_error_steps and kept):
                raise VerificationError(
                    f".ort model does not match {onnx_path.name}: {error_steps:.3g} output quantization steps "
                    f"(allowed {max_error_steps:g}, step {min(steps):.3g}){top1_text}"
                    f"{'' if kept else ', top-1 changed where no tie explains it'}; nothing was written"
                )
            int8 = dict(criterion="quantization_steps", error_steps=error_steps, max_error_steps=max_error_steps,
                        output_step=min(steps), top1_agreement=top1)
        else:
            check = f"relative {errors.relative_error:.2e} <= {tolerance:.0e}"
            if not errors.relative_error <= tolerance:
                raise VerificationError(
                    f".ort model does not match {onnx_path.name}: relative error {errors.relative_error:.3g} > "
                    f"tolerance {tolerance:.3g} (max abs {errors.max_abs_error:.3g}); nothing was written"
                )
        operators = _read_operators(config)
        final_ort, final_config = out_dir / ort_file.name, out_dir / config.name
        # Same filesystem (the work dir is inside out_dir), so each rename is atomic.
        os.replace(config, final_config)
        os.replace(ort_file, final_ort)

    return MobileResult(
        ort_path=final_ort,
        config_path=final_config,
        size_bytes=final_ort.stat().st_size,
        onnx_size_bytes=onnx_path.stat().st_size,
        target_platform=target_platform,
        max_abs_error=errors.max_abs_error,
        mean_abs_error=errors.mean_abs_error,
        relative_error=errors.relative_error,
        tolerance=tolerance,
        required_operators=operators,
        log=log.getvalue(),
        check=check,
        **int8,
    )
