"""What the harness measures: an .onnx / .ort model, a TensorRT engine, or a compress OUTDIR.

An OUTDIR (recipe.json + model.safetensors + report.json) is measured through its model.onnx, which
needs no code. When that file is absent (a directory from an older edgecomp) it is exported first
with exporters.convert, written atomically into the OUTDIR and recorded in its manifest. That
rebuilds the PyTorch model, so it runs the code the recipe names only as edgecomp.factor.recipe
allows: a zoo spec, the caller's own model spec (`source`, e.g. --reference), or trust_code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecomp.errors import UserInputError
from edgecomp.runtime.transport.base import sha256_file

if TYPE_CHECKING:
    from edgecomp.runtime.reference import ReferenceSpec

ONNX_SUFFIXES = (".onnx",)
ORT_SUFFIXES = (".ort",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass
class Artifact:
    """A runnable model file and what could be learned about it on the host."""

    path: Path
    kind: str                          # onnx | ort | tensorrt
    given: Path                        # what the user named (file or OUTDIR)
    sha256: str
    size_bytes: int
    outdir: Path | None = None
    exported_now: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    input_name: str | None = None
    input_shape: tuple[int | None, ...] | None = None   # None entries: dynamic
    input_dtype: str | None = None
    precision: str | None = None       # fp32 | fp16 | int8 (from the graph), None if unknown
    opset: int | None = None
    output_width: int | None = None    # classes of a static (N, C) first output; None if unknown

    @property
    def runtime(self) -> str:
        return "tensorrt" if self.kind == "tensorrt" else "onnxruntime"

    def sample_shape(self) -> tuple[int, ...] | None:
        """Per-sample input shape (batch axis dropped), from the graph or edgecomp.input_shape metadata."""
        if self.input_shape and all(isinstance(d, int) for d in self.input_shape[1:]):
            return tuple(int(d) for d in self.input_shape[1:])
        meta = self.metadata.get("edgecomp.input_shape")
        if meta:
            try:
                shape = json.loads(meta)
                return tuple(int(d) for d in shape[1:])
            except (ValueError, TypeError):
                return None
        return None

    @property
    def fixed_batch(self) -> int | None:
        if self.input_shape and isinstance(self.input_shape[0], int):
            return int(self.input_shape[0])
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "given": str(self.given),
            "kind": self.kind,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "outdir": None if self.outdir is None else str(self.outdir),
            "exported_now": self.exported_now,
            "input_name": self.input_name,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "input_dtype": self.input_dtype,
            "precision": self.precision,
            "opset": self.opset,
            "metadata": dict(self.metadata),
        }


def resolve_artifact(path: str | Path, *, device: str | None = None, source: ReferenceSpec | str | None = None,
                     trust_code: bool = False) -> Artifact:
    """Identify and inspect ARTIFACT_OR_OUTDIR; UserInputError for anything that cannot be measured.

    `source` (the model spec the caller named, e.g. --reference) and `trust_code` matter only for an
    OUTDIR without model.onnx: they allow rebuilding its model to export one.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise UserInputError(f"artifact not found: {given}")
    if given.is_dir():
        return _from_outdir(given, device, source, trust_code)
    suffix = given.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return _inspect_onnx(given, given)
    if suffix in ORT_SUFFIXES:
        return _artifact(given, "ort", given)
    if suffix in ENGINE_SUFFIXES:
        return _artifact(given, "tensorrt", given)
    raise UserInputError(
        f"{given}: cannot measure a {suffix or 'suffix-less'} file; expected an .onnx/.ort model, a TensorRT "
        ".engine/.plan, or an edgecomp output directory"
    )


def _artifact(path: Path, kind: str, given: Path, **kw) -> Artifact:
    if path.stat().st_size == 0:
        raise UserInputError(f"{path} is empty")
    return Artifact(path=path, kind=kind, given=given, sha256=sha256_file(path), size_bytes=path.stat().st_size, **kw)


def _inspect_onnx(path: Path, given: Path, **kw) -> Artifact:
    from edgecomp.exporters.onnx_check import graph_inputs, graph_outputs, load_onnx_checked

    model = load_onnx_checked(path)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserInputError(f"{path}: the model has {len(inputs)} inputs; edgecomp measures single-input models")
    spec = inputs[0]
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in spec.dims)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    outputs = graph_outputs(model)
    dims = list(outputs[0].dims) if outputs else []
    width = dims[1] if len(dims) == 2 and isinstance(dims[1], int) and dims[1] > 0 else None
    return _artifact(
        path, "onnx", given,
        metadata={p.key: p.value for p in model.metadata_props},
        input_name=spec.name,
        input_shape=shape,
        input_dtype=spec.dtype,
        precision=_precision(model),
        opset=opset,
        output_width=width,
        **kw,
    )


def _precision(model) -> str:
    """int8 if the graph has quantized ops, fp16 if any initializer is float16, else fp32."""
    import onnx

    if any(node.op_type in INT8_OPS for node in model.graph.node):
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def _from_outdir(outdir: Path, device: str | None, source: ReferenceSpec | str | None, trust_code: bool) -> Artifact:
    from edgecomp.factor.recipe import is_compressed_dir
    from edgecomp.outdir import ONNX_FILE, RECIPE_FILE

    if not is_compressed_dir(outdir):
        raise UserInputError(f"{outdir} is a directory but not an edgecomp output directory (no {RECIPE_FILE})")
    onnx_path = outdir / ONNX_FILE
    exported = False
    if not onnx_path.is_file():
        _export_outdir_onnx(outdir, onnx_path, device, source, trust_code)
        exported = True
    return _inspect_onnx(onnx_path, outdir, outdir=outdir, exported_now=exported)


def _export_outdir_onnx(outdir: Path, onnx_path: Path, device: str | None, source, trust_code: bool) -> None:
    """Export the OUTDIR's model.onnx (an OUTDIR from before compress wrote one) with exporters.convert, and
    record it in the manifest as written for verify."""
    from edgecomp.exporters.convert import convert
    from edgecomp.exporters.from_outdir import OutputDir
    from edgecomp.exporters.metadata import DEVICE
    from edgecomp.outdir import record

    spec, trust_pickle = _named_spec(source)
    rebuild = OutputDir(outdir, model_spec=spec, trust_code=trust_code, trust_pickle=trust_pickle,
                        allow_hint="--reference SPEC (the model's source spec) or --trust-code")
    convert(rebuild, onnx_path, metadata={DEVICE: device} if device else None)
    record([onnx_path], by="verify")


def _named_spec(source) -> tuple[str | None, bool]:
    """(spec, trust_pickle) of the model a caller named: a ReferenceSpec, a plain spec string or None."""
    if source is None or isinstance(source, str):
        return source, False
    return source.spec, bool(source.trust_pickle)


def outdir_report(outdir: Path | None) -> dict[str, Any] | None:
    """The OUTDIR's report.json (None if absent or unreadable)."""
    if outdir is None:
        return None
    from edgecomp.formats import read_optional

    doc = read_optional(outdir / "report.json", "compress-report")
    return doc if isinstance(doc, dict) else None
