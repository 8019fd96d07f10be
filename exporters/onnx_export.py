"""Export a PyTorch model to a verified ONNX file.

Steps: deep-copy the model (the caller's model is never touched), put the copy in eval mode, fold
BatchNorm into the preceding convolutions (exporters.bn_fold), rewrite non-dividing adaptive average
pools as exact MatMul pairs (exporters.lowering), export with the TorchScript-based
exporter, stamp the edgecomp metadata, optionally simplify with onnxslim, run the full ONNX checker
and shape inference, then run the file in onnxruntime (CPU) and compare with the unfolded PyTorch
model on the same inputs. Only a file that passes relative_error <= tolerance is renamed into place.

The TorchScript path (dynamo=False) is used because the torch.export-based exporter (the default
since torch 2.9) needs the onnxscript package; for the plain CNN graphs edgecomp produces the
TorchScript exporter is complete and deterministic.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from edgecomp.errors import UserInputError, VerificationError
from edgecomp.io import atomic_path
from edgecomp.exporters import metadata as md
from edgecomp.exporters.bn_fold import fold_batchnorm
from edgecomp.exporters.lowering import lower_adaptive_pools
from edgecomp.exporters.onnx_check import node_counts
from edgecomp.exporters.verify import compare_outputs, cpu_session, run_inputs
from edgecomp.optional import require

DEFAULT_SEED = 0


@dataclass
class OnnxExportResult:
    path: Path
    size_bytes: int
    opset: int
    max_abs_error: float
    mean_abs_error: float
    relative_error: float
    tolerance: float
    node_counts: dict[str, int]
    simplified: bool
    metadata: dict[str, str]
    dynamic_batch: bool = True
    folded_batchnorms: int = 0
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)
    check_batch: int = 0
    notes: list[str] = field(default_factory=list)


def _flatten_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        flat: list[torch.Tensor] = []
        for item in out:
            flat.extend(_flatten_outputs(item))
        return flat
    if isinstance(out, Mapping):
        return _flatten_outputs(list(out.values()))
    raise UserInputError(f"the model returned a {type(out).__name__}; only tensors (or tuples of them) can be exported")


def input_shapes(input_shape) -> list[tuple[int, ...]]:
    """One shape (N, C, ...) or a sequence of shapes, one per model input -> a list of shapes.

    Each shape has at least two positive dims; UserInputError otherwise.
    """
    items = list(input_shape)
    nested = bool(items) and all(isinstance(s, (tuple, list, torch.Size)) for s in items)
    shapes = []
    for shape in items if nested else [items]:
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise UserInputError(f"input_shape must be integers like (1, 3, 224, 224), got {input_shape!r}") from None
        if len(shape) < 2 or any(d <= 0 for d in shape):
            raise UserInputError(f"input_shape must be (N, C, ...) with positive dims, got {shape}")
        shapes.append(shape)
    return shapes


def _check_inputs(check_inputs, shapes: list[tuple[int, ...]], dynamic_batch: bool) -> list[torch.Tensor]:
    """One float32 CPU tensor per input: `check_inputs` (an array for one input, a sequence of arrays for
    several) checked against the shapes, or seeded N(0, 1) inputs (batch 2 when the batch is dynamic)."""
    if check_inputs is None:
        gen = torch.Generator().manual_seed(DEFAULT_SEED)
        return [torch.randn(((2,) + shape[1:]) if dynamic_batch else shape, generator=gen) for shape in shapes]
    given = [check_inputs] if len(shapes) == 1 else list(check_inputs)
    if len(given) != len(shapes):
        raise UserInputError(f"the model has {len(shapes)} inputs but {len(given)} check_inputs were given")
    tensors = []
    for x, input_shape in zip(given, shapes):
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        x = x.detach().to("cpu", torch.float32)
        if tuple(x.shape[1:]) != tuple(input_shape[1:]) or x.dim() != len(input_shape):
            raise UserInputError(
                f"check_inputs have shape {tuple(x.shape)}; the model input is {tuple(input_shape)} (batch dim may differ)"
            )
        if not dynamic_batch and x.shape[0] != input_shape[0]:
            raise UserInputError(
                f"the export has a fixed batch of {input_shape[0]} (dynamic_batch=False) but check_inputs have {x.shape[0]}"
            )
        tensors.append(x)
    if len({x.shape[0] for x in tensors}) > 1:
        raise UserInputError(f"check_inputs differ in batch size: {[tuple(x.shape) for x in tensors]}")
    return tensors


def _torch_export(
    model: nn.Module,
    dummies: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    dynamic_batch: bool,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> None:
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices are not actionable here
            torch.onnx.export(
                model,
                dummies,
                str(path),
                dynamo=False,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                training=torch.onnx.TrainingMode.EVAL,
            )
    except Exception as exc:  # the exporter raises many types (SymbolicValueError, RuntimeError, ...)
        # The exporter appends the whole TorchScript graph to its messages; the first lines say what failed.
        summary = " ".join(str(exc).strip().splitlines()[:2])[:500]
        raise UserInputError(f"torch.onnx.export failed at opset {opset}: {summary}") from exc


def _simplify(model):
    onnxslim = require("onnxslim")
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(model)


def _set_metadata(model, metadata: Mapping[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = str(key)
        entry.value = md.as_metadata_value(value)


def export_onnx(
    model: nn.Module,
    out_path: str | Path,
    input_shape: tuple[int, ...] | Sequence[tuple[int, ...]],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    fold_bn: bool = True,
    metadata: Mapping[str, str] | None = None,
    check_inputs=None,
    tolerance: float = 1e-4,
    simplify: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] = ("output",),
) -> OnnxExportResult:
    """Export `model` to `out_path` (atomically) and prove the file computes what the model computes.

    input_shape is the full traced shape (N, C, H, W), or a sequence of such shapes for a model with
    several inputs (then forward(*inputs), and check_inputs is a sequence with one array per input);
    with dynamic_batch the batch axis of every input and output is symbolic ("batch"). Inputs are named
    "input" (one) or "input_0", "input_1", ... unless input_names says otherwise. The check runs the file
    in onnxruntime on `check_inputs` (default: seeded N(0, 1) inputs, batch 2 when the batch is dynamic,
    to exercise that axis) and raises VerificationError when max|ort - torch| / max|torch| > tolerance;
    nothing is left at out_path then.
    """
    import onnx

    shapes = input_shapes(input_shape)
    if tolerance <= 0:
        raise UserInputError(f"tolerance must be positive, got {tolerance}")
    if input_names is None:
        input_names = ("input",) if len(shapes) == 1 else tuple(f"input_{i}" for i in range(len(shapes)))
    if len(input_names) != len(shapes):
        raise UserInputError(f"the model has {len(shapes)} input shapes but {len(input_names)} input_names were given")
    out_path = Path(out_path)
    meta = md.build_metadata(input_shape=shapes[0] if len(shapes) == 1 else shapes)
    meta.update({k: md.as_metadata_value(v) for k, v in (metadata or {}).items()})

    reference_model = copy.deepcopy(model).to("cpu").eval()
    export_model = copy.deepcopy(reference_model)
    xs = _check_inputs(check_inputs, shapes, dynamic_batch)
    with torch.no_grad():
        try:
            raw = reference_model(*xs)
        except Exception as exc:  # a shape mismatch surfaces as RuntimeError from deep inside torch
            shown = ", ".join(str(tuple(x.shape)) for x in xs)
            raise UserInputError(f"the model cannot run on inputs of shape {shown}: {exc}") from exc
        reference = [t.detach().cpu().numpy() for t in _flatten_outputs(raw)]
    folded = fold_batchnorm(export_model) if fold_bn else 0
    gen = torch.Generator().manual_seed(DEFAULT_SEED + 1)
    dummies = tuple(torch.randn(shape, generator=gen) for shape in shapes)
    lowered = lower_adaptive_pools(export_model, dummies)
    if len(output_names) != len(reference):
        raise UserInputError(f"the model has {len(reference)} outputs but {len(output_names)} output_names were given")

    with atomic_path(out_path) as tmp:
        _torch_export(export_model, dummies, tmp, opset, dynamic_batch, input_names, output_names)
        proto = onnx.load(str(tmp))
        if simplify:
            proto = _simplify(proto)
        _set_metadata(proto, meta)
        try:
            onnx.checker.check_model(proto, full_check=True)
            proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise VerificationError(f"the exported ONNX graph is invalid: {exc}") from exc
        onnx.save(proto, str(tmp))

        candidate = run_inputs(cpu_session(tmp), [x.numpy() for x in xs])
        errors = compare_outputs(reference, candidate)
        if not errors.relative_error <= tolerance:  # also catches NaN
            raise VerificationError(
                f"ONNX export does not match PyTorch: relative error {errors.relative_error:.3g} > tolerance "
                f"{tolerance:.3g} (max abs {errors.max_abs_error:.3g}, mean abs {errors.mean_abs_error:.3g}); "
                f"{out_path} was not written"
            )
        counts = node_counts(proto)

    notes = []
    if lowered:
        notes.append(f"{lowered} AdaptiveAvgPool2d layer(s) with non-dividing output size exported as MatMul pairs")
    if "BatchNormalization" in counts:
        notes.append(f"{counts['BatchNormalization']} BatchNormalization node(s) could not be folded into a Conv")
    return OnnxExportResult(
        path=out_path,
        size_bytes=out_path.stat().st_size,
        opset=opset,
        max_abs_error=errors.max_abs_error,
        mean_abs_error=errors.mean_abs_error,
        relative_error=errors.relative_error,
        tolerance=tolerance,
        node_counts=counts,
        simplified=simplify,
        metadata=dict(meta),
        dynamic_batch=dynamic_batch,
        folded_batchnorms=folded,
        input_names=tuple(input_names),
        output_names=tuple(output_names),
        check_batch=int(xs[0].shape[0]),
        notes=notes,
    )
