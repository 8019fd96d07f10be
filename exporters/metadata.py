"""The edgecomp keys written into an ONNX file's metadata_props (provenance of the artifact).

Values are strings; structured values (ranks, input shape) are JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from edgecomp import __version__

VERSION = "edgecomp.version"
SOURCE_MODEL = "edgecomp.source_model"
WEIGHTS = "edgecomp.weights"
DEVICE = "edgecomp.device"
SCHEME = "edgecomp.scheme"
RANKS = "edgecomp.ranks"
INPUT_SHAPE = "edgecomp.input_shape"

KEYS = (VERSION, SOURCE_MODEL, WEIGHTS, DEVICE, SCHEME, RANKS, INPUT_SHAPE)


def as_metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def build_metadata(
    *,
    source_model: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    scheme: str | None = None,
    ranks: Mapping[str, int] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, str]:
    """The agreed metadata dict for an artifact (keys with no value are left out)."""
    raw: dict[str, Any] = {
        VERSION: __version__,
        SOURCE_MODEL: source_model,
        WEIGHTS: weights,
        DEVICE: device,
        SCHEME: scheme,
        RANKS: None if ranks is None else {str(k): int(v) for k, v in ranks.items()},
        INPUT_SHAPE: None if input_shape is None else [int(d) for d in input_shape],
    }
    return {k: as_metadata_value(v) for k, v in raw.items() if v is not None}


def metadata_from_recipe(recipe: Mapping[str, Any], *, device: str | None = None) -> dict[str, str]:
    """Metadata for a model rebuilt from an edgecomp output directory's recipe.json."""
    source = recipe.get("source") or {}
    weights = source.get("weights")
    return build_metadata(
        source_model=source.get("spec"),
        weights=str(weights) if weights else None,
        device=device or recipe.get("device"),
        scheme=recipe.get("scheme"),
        ranks=recipe.get("ranks"),
        input_shape=tuple(recipe["input_shape"]) if recipe.get("input_shape") else None,
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict (no validation)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
