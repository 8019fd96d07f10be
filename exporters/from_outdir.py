"""Start a conversion from an output directory's model.onnx instead of rebuilding its PyTorch model.

`compress` exports DIR/model.onnx and checks it against the PyTorch model (exporters.onnx_export):
opset 17, a symbolic batch axis, the recipe's input shape, no simplification. A conversion that asks
for that same export (ONNX Runtime formats, INT8 quantization and TensorRT need only ONNX) copies
the file, with this run's metadata, and so runs no code the directory names. One that asks for a
different export (another opset, a fixed batch, another input shape, --simplify) or whose
model.onnx is already quantized needs the PyTorch model; `reuse_blocker` says which, and
`onnx_from_outdir` rebuilds it then only as the directory's `OutputDir` settings allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from edgecomp.exporters import metadata as md
from edgecomp.exporters.onnx_check import graph_inputs, is_qdq, load_onnx_checked, node_counts


@dataclass(frozen=True)
class OutputDir:
    """An edgecomp output directory as a conversion source, and what may run to rebuild its PyTorch model.

    Nothing the directory names runs by default: its model.onnx is used when it is the export asked
    for; otherwise the model is rebuilt from a zoo spec, from `model_spec` (the caller's own spec of
    the source architecture), from the recipe's code only with trust_code, or from a pickle only with
    trust_pickle (edgecomp.factor.recipe). `allow_hint` is how a refusal says to allow running code.
    """

    path: Path
    model_spec: str | None = None
    trust_code: bool = False
    trust_pickle: bool = False
    allow_hint: str = "--trust-code"

    def recipe(self) -> dict:
        """The directory's recipe.json (UserInputError when it is not an output directory)."""
        from edgecomp.factor.recipe import read_recipe

        return read_recipe(self.path)


@dataclass
class ReusedOnnx:
    """An output directory's model.onnx written to `path` (the fields export_onnx's result has, where known)."""

    path: Path
    reused_from: Path
    size_bytes: int
    opset: int | None
    dynamic_batch: bool
    node_counts: dict[str, int]
    metadata: dict[str, str]
    # From the directory's report.json: the check against PyTorch when compress exported it (None if unknown).
    max_abs_error: float | None = None
    relative_error: float | None = None
    tolerance: float | None = None
    check_batch: int | None = None
    folded_batchnorms: int | None = None
    notes: list[str] = field(default_factory=list)


def _opset(model) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def reuse_blocker(stored: str | Path, *, input_shape: tuple[int, ...], opset: int, dynamic_batch: bool,
                  simplify: bool) -> str | None:
    """None when `stored` is the export these settings ask for; else the setting that needs a new export."""
    model = load_onnx_checked(stored)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        return f"{stored} has {len(inputs)} inputs"
    if is_qdq(model):
        return f"{stored} is quantized (INT8), not the float model"
    if simplify:
        return "--simplify"
    if _opset(model) != opset:
        return f"--opset {opset} ({stored} has opset {_opset(model)})"
    spec = inputs[0]
    if spec.dynamic_batch != dynamic_batch:
        return "a fixed batch (--no-dynamic-batch)" if not dynamic_batch else f"a dynamic batch ({stored} has a fixed one)"
    dims = tuple(spec.dims[1:] if dynamic_batch else spec.dims)
    wanted = tuple(input_shape[1:] if dynamic_batch else input_shape)
    if dims != wanted:
        return f"input shape {tuple(input_shape)} ({stored} takes {tuple(spec.dims)})"
    return None


def reuse_onnx(stored: str | Path, out_path: str | Path, *, input_shape: tuple[int, ...] | None,
               metadata: Mapping[str, str] | None = None, check: Mapping | None = None,
               keep_metadata: bool = False) -> ReusedOnnx:
    """Write `stored` to `out_path` (atomically; the same path is rewritten in place) with `metadata` in its
    metadata_props, over the file's own ones with keep_metadata (else over edgecomp's input shape only).
    `check` is compress's record of the export check (report.json "onnx"), if any."""
    import onnx

    from edgecomp.io import atomic_path

    stored, out_path = Path(stored), Path(out_path)
    model = load_onnx_checked(stored)
    meta = {p.key: p.value for p in model.metadata_props} if keep_metadata else {}
    if input_shape is not None:
        meta.update(md.build_metadata(input_shape=tuple(input_shape)))
    meta.update({k: md.as_metadata_value(v) for k, v in (metadata or {}).items()})
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    check = dict(check or {})
    known = check.get("written") and check.get("opset") == _opset(model)
    return ReusedOnnx(
        path=out_path,
        reused_from=stored,
        size_bytes=out_path.stat().st_size,
        opset=_opset(model),
        dynamic_batch=graph_inputs(model)[0].dynamic_batch,
        node_counts=node_counts(model),
        metadata=meta,
        max_abs_error=check.get("max_abs_error") if known else None,
        relative_error=check.get("relative_error") if known else None,
        tolerance=check.get("tolerance") if known else None,
        check_batch=check.get("check_batch") if known else None,
        folded_batchnorms=check.get("folded_batchnorms") if known else None,
    )


def outdir_check(outdir: str | Path) -> dict | None:
    """The export check compress recorded in the directory's report.json ("onnx"), or None."""
    from edgecomp.formats import read_optional

    doc = read_optional(Path(outdir) / "report.json", "compress-report")
    value = doc.get("onnx") if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else None


def onnx_from_outdir(source: OutputDir, onnx_path: str | Path, *, input_shape: tuple[int, ...], opset: int,
                     dynamic_batch: bool, simplify: bool, metadata: Mapping[str, str], check_inputs=None,
                     tolerance: float = 1e-4):
    """The float ONNX of an output directory at `onnx_path`: its model.onnx when that is the export these
    settings ask for (ReusedOnnx, no code runs), else a new export of its rebuilt PyTorch model
    (exporters.onnx_export.OnnxExportResult) where `source` allows rebuilding it."""
    from edgecomp.errors import UserInputError
    from edgecomp.exporters.onnx_export import export_onnx
    from edgecomp.factor import load_compressed
    from edgecomp.outdir import ONNX_FILE

    stored = Path(source.path) / ONNX_FILE
    blocker = None
    if stored.is_file():
        blocker = reuse_blocker(stored, input_shape=input_shape, opset=opset, dynamic_batch=dynamic_batch,
                                simplify=simplify)
        if blocker is None:
            return reuse_onnx(stored, onnx_path, input_shape=input_shape, metadata=metadata,
                              check=outdir_check(source.path))
    try:
        loaded = load_compressed(source.path, model_spec=source.model_spec, trust_code=source.trust_code,
                                 trust_pickle=source.trust_pickle, allow_hint=source.allow_hint)
    except UserInputError as exc:
        if blocker is None:
            raise
        raise UserInputError(f"{blocker} needs a new export from the PyTorch model: {exc}") from None
    return export_onnx(loaded.module, onnx_path, input_shape, opset=opset, dynamic_batch=dynamic_batch,
                       metadata=metadata, check_inputs=check_inputs, tolerance=tolerance, simplify=simplify)
