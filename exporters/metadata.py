"""The edgecomp keys written into an ONNX file's metadata_props (provenance of the artifact).

Values are strings; structured values (ranks, input shape) are JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgecomp import __version__

VERSION = "edgecomp.version"
SOURCE_MODEL = "edgecomp.source_model"
WEIGHTS = "edgecomp.weights"
DEVICE = "edgecomp.device"
SCHEME = "edgecomp.scheme"
RANKS = "edgecomp.ranks"
INPUT_SHAPE = "edgecomp.input_shape"
# INT8 artifacts: the quantization settings and the CPU they were chosen for (JSON, see int8_metadata).
INT8_SETTINGS = "edgecomp.int8_settings"

KEYS = (VERSION, SOURCE_MODEL, WEIGHTS, DEVICE, SCHEME, RANKS, INPUT_SHAPE, INT8_SETTINGS)


def as_metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def build_metadata(
    *,
    source_model: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    scheme: str | None = None,
    ranks: Mapping[str, int | Sequence[int] | Mapping[str, Any]] | None = None,
    input_shape: tuple[int, ...] | Sequence[tuple[int, ...]] | None = None,
) -> dict[str, str]:
    """The agreed metadata dict for an artifact (keys with no value are left out). INPUT_SHAPE is a list of
    ints, or a list of such lists for a model with several inputs. A rank is an int, [r1, r2] for a
    Tucker-2 layer, or under scheme "auto" {"scheme": S, "rank": R}: the scheme each layer took and its rank."""
    raw: dict[str, Any] = {
        VERSION: __version__,
        SOURCE_MODEL: source_model,
        WEIGHTS: weights,
        DEVICE: device,
        SCHEME: scheme,
        RANKS: None if ranks is None else {str(k): _rank_value(v) for k, v in ranks.items()},
        INPUT_SHAPE: None if input_shape is None else _shape_value(input_shape),
    }
    return {k: as_metadata_value(v) for k, v in raw.items() if v is not None}


def _rank_value(value):
    if isinstance(value, Mapping):
        return {"scheme": str(value["scheme"]), "rank": _rank_value(value["rank"])}
    return [int(r) for r in value] if isinstance(value, (list, tuple)) else int(value)


def _shape_value(shape) -> list:
    items = list(shape)
    if items and all(isinstance(s, (tuple, list)) for s in items):
        return [[int(d) for d in s] for s in items]
    return [int(d) for d in items]


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


def int8_metadata(settings, *, per_channel: bool, symmetric_activations: bool, calibrate_method: str) -> dict[str, str]:
    """The INT8_SETTINGS entry for a QDQ model quantized with `settings` (exporters.cpu_features.Int8Settings).

    Records the weight range (7-bit under reduce_range), the activation encoding, where the CPU was
    detected (host, target = reported by the agent, unknown, gpu), the flags the decision used, and why.
    """
    low, high = settings.weight_range
    value = {
        "weights": {"type": "int8", "symmetric": True, "per_channel": per_channel, "range": [low, high],
                    "reduce_range": settings.reduce_range},
        "activations": {"type": "int8", "symmetric": symmetric_activations, "calibration": calibrate_method},
        "chosen_for": {"runs_on": settings.runs_on, "machine": settings.machine, "cpu_flags": list(settings.cpu_flags)},
        "reason": settings.reason,
    }
    return {INT8_SETTINGS: as_metadata_value(value)}


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict (no validation)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
