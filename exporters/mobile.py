"""ONNX -> ORT format for ONNX Runtime Mobile, plus the operator config for a reduced-size build.

Uses onnxruntime.tools.convert_onnx_models_to_ort (the API behind
`python -m onnxruntime.tools.convert_onnx_models_to_ort`) with the "Fixed" optimization style: graph
optimizations are applied once at conversion and baked into the .ort file. The NCHWc layout
transform (x86-only) is excluded unless target_platform="amd64", so the file runs on ARM phones.
The `<stem>.required_operators.config` file lists the operators a minimal ORT build must include
(`build.sh --minimal_build --include_ops_by_config <file>`).
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
from exporters.onnx_check import graph_inputs, load_onnx_checked
from exporters.verify import compare_outputs, cpu_session, run_batched

TARGET_PLATFORMS = ("arm", "amd64")


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
) -> MobileResult:
    """Convert `onnx_path` to `<out_dir>/<stem>.ort` (+ `<stem>.required_operators.config`), verified.

    The .ort file is loaded in an onnxruntime InferenceSession and its outputs on `check_inputs`
    (default: seeded N(0, 1), batch 2 when the batch is dynamic) are compared with the ONNX model's;
    relative error (max abs error / max |ONNX output|) above `tolerance` raises VerificationError
    and neither file is kept. Quantized models are compared with the same ONNX Runtime, so a small
    tolerance still holds unless the conversion changes the arithmetic.
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
    stem = onnx_path.stem

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

        reference = run_batched(cpu_session(onnx_path), x)
        candidate = run_batched(cpu_session(ort_file), x)
        errors = compare_outputs(reference, candidate)
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
    )
