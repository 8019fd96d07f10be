"""Validate ONNX files given by users and read the facts the exporters need from a graph."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgecomp.errors import UserInputError


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output: name, element type name and dims (int, or a str/None for a dynamic dim)."""

    name: str
    dtype: str
    dims: tuple[int | str | None, ...]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.dims) and not isinstance(self.dims[0], int)


def load_onnx_checked(path: str | Path):
    """Load a user-given ONNX file and run the full ONNX checker on it; returns the ModelProto.

    Any problem (missing file, not protobuf, invalid graph, no inputs) is a UserInputError that says
    what is wrong with which file.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"ONNX file not found: {path}")
    if not path.is_file():
        raise UserInputError(f"{path} is not a file (expected an .onnx model)")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise UserInputError(f"{path} is not a readable ONNX model (corrupt or not ONNX): {exc}") from exc
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{path} is not a valid ONNX model: {first}") from exc
    if not graph_inputs(model):
        raise UserInputError(f"{path}: the ONNX graph has no inputs")
    return model


def _dims(value_info) -> tuple[int | str | None, ...]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _spec(value_info) -> TensorSpec:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "?"
    return TensorSpec(value_info.name, dtype, _dims(value_info))


def graph_inputs(model) -> list[TensorSpec]:
    """The real inputs (initializers listed as inputs by old exporters are left out)."""
    initializers = {i.name for i in model.graph.initializer}
    return [_spec(v) for v in model.graph.input if v.name not in initializers]


def graph_outputs(model) -> list[TensorSpec]:
    return [_spec(v) for v in model.graph.output]


def node_counts(model) -> dict[str, int]:
    """How many nodes of each op type the main graph has (sorted by op type)."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def is_qdq(model) -> bool:
    """True when the graph carries explicit quantization (QuantizeLinear/DequantizeLinear pairs)."""
    ops = {n.op_type for n in model.graph.node}
    return "QuantizeLinear" in ops and "DequantizeLinear" in ops
