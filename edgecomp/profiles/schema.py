"""JSON Schema of a device profile YAML file, and validation with errors that name file and field.

A profile is structural data (checked here with jsonschema) plus a few cross-field rules that a
schema cannot state clearly (checked in `check_semantics`): the default precision must be one of
the precisions, every precision needs a peak MAC rate (and a per-precision rank multiple names a listed
precision), an ssh target needs an ssh:// URL, and
profile budgets must be absolute (fractions only make sense relative to a model, on the CLI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema

from edgecomp.errors import UserInputError

PRECISIONS = ("fp32", "fp16", "int8")
RUNTIMES = ("tensorrt", "onnxruntime")
TRANSPORTS = ("local", "ssh", "adb")
OPT_LEVELS = ("all", "extended", "basic", "disabled")

_NAME = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9._-]*$",
    "x-hint": "use lowercase letters, digits, '.', '_' and '-' (starting with a letter or digit)",
}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_MULTIPLE = {"type": "integer", "minimum": 1}
# "simd": the fp32 SIMD width of the CPU that runs the model, detected (local targets only)
_MULTIPLE_OR_SIMD = {"oneOf": [_MULTIPLE, {"const": "simd"}]}
# runtime.rank_multiple: one value for every precision, or one per precision (edgecomp.factor.rank_rounding)
_RANK_MULTIPLE = {
    "oneOf": [
        _MULTIPLE_OR_SIMD,
        {"type": "object", "additionalProperties": False, "minProperties": 1,
         "properties": {p: _MULTIPLE_OR_SIMD for p in PRECISIONS}},
    ],
    "x-hint": "use an integer >= 1 or simd, or a mapping of precisions to those such as {fp16: 8, int8: 32}",
}

PROFILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgecomp device profile",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "runtime", "precisions", "default_precision", "compute", "budgets", "target"],
    "properties": {
        "name": _NAME,
        "aliases": {"type": "array", "items": _NAME, "uniqueItems": True},
        "description": {"type": "string"},
        "runtime": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": list(RUNTIMES)},
                # ONNX Runtime EPs in priority order (for a tensorrt device: the EPs used when it is
                # measured through ONNX Runtime instead of a TensorRT engine).
                "execution_providers": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9]+ExecutionProvider$",
                        "x-hint": "use ONNX Runtime provider names such as CPUExecutionProvider",
                    },
                    "uniqueItems": True,
                },
                "threads": {"type": ["integer", "null"], "minimum": 1},
                "graph_optimization_level": {"enum": list(OPT_LEVELS)},
                # the rank multiple the runtime runs fastest (factored ranks are rounded down to it)
                "rank_multiple": _RANK_MULTIPLE,
            },
        },
        "precisions": {
            "type": "array",
            "items": {"enum": list(PRECISIONS)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "default_precision": {"enum": list(PRECISIONS)},
        "compute": {
            "type": "object",
            "additionalProperties": False,
            "required": ["peak_macs_per_s", "efficiency"],
            "properties": {
                "peak_macs_per_s": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {p: _POSITIVE for p in PRECISIONS},
                },
                "efficiency": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            },
        },
        "budgets": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "latency_ms": {"type": ["number", "null"], "minimum": 0},
                "percentile": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                # absolute MACs: a number or a string with a K/M/G/T suffix; null = derived from latency
                "mac_budget": {"type": ["number", "string", "null"]},
                # absolute bytes: a number or a string like "16MB" / "16MiB"; null = no memory budget
                "memory_budget": {"type": ["number", "string", "null"]},
            },
        },
        "target": {
            "type": "object",
            "additionalProperties": False,
            "required": ["transport"],
            "properties": {
                "transport": {"enum": list(TRANSPORTS)},
                "url": {"type": ["string", "null"], "minLength": 1},
                "python": {"type": "string", "minLength": 1},
                "workdir": {"type": "string", "minLength": 1},
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(PROFILE_SCHEMA)


def display_path(path: str | os.PathLike | None) -> str:
    """The path as the user would write it: relative to the working directory when inside it."""
    if path is None:
        return "<profile>"
    path = Path(path)
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def _field(parts) -> str:
    return ".".join(str(p) for p in parts)


def _describe(error: jsonschema.ValidationError) -> list[str]:
    """One 'field: problem' line per problem in a jsonschema error."""
    where = _field(error.absolute_path)
    if error.validator == "required":
        # jsonschema reports each missing field as its own error: all of them give this one line
        missing = [_field([*error.absolute_path, name]) for name in error.validator_value if name not in error.instance]
        plural = "s" if len(missing) > 1 else ""
        return [f"{', '.join(missing)}: missing required field{plural}"]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return [
            f"{_field([*error.absolute_path, name])}: unknown field (allowed here: {', '.join(allowed)})"
            for name in extra
        ]
    if error.validator == "pattern" and "x-hint" in error.schema:
        return [f"{where}: {error.instance!r} is not a valid name: {error.schema['x-hint']}"]
    if error.validator == "oneOf" and "x-hint" in error.schema:
        return [f"{where}: {error.instance!r} is not valid: {error.schema['x-hint']}"]
    return [f"{where or '<top level>'}: {error.message}"]


def validate_profile_data(data: Any, source: str | os.PathLike | None = None) -> None:
    """Raise UserInputError listing every schema and cross-field problem, each prefixed with the file."""
    where = display_path(source)
    if not isinstance(data, dict):
        raise UserInputError(f"{where}: a device profile must be a YAML mapping, got {type(data).__name__}")
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    lines = list(dict.fromkeys(line for error in errors for line in _describe(error)))  # each problem once
    if not lines:
        lines = check_semantics(data)
    if lines:
        raise UserInputError("\n".join(f"{where}: {line}" for line in lines))


def check_semantics(data: dict) -> list[str]:
    """Cross-field rules on schema-valid data; returns 'field: problem' lines."""
    from edgecomp.profiles.units import parse_bytes, parse_count

    problems: list[str] = []
    precisions = data["precisions"]
    if data["default_precision"] not in precisions:
        problems.append(f"default_precision: {data['default_precision']!r} is not one of precisions {precisions}")
    peaks = data["compute"]["peak_macs_per_s"]
    for precision in precisions:
        if precision not in peaks:
            problems.append(f"compute.peak_macs_per_s.{precision}: missing (every listed precision needs a peak rate)")

    multiple = data["runtime"].get("rank_multiple")
    if isinstance(multiple, dict):
        for precision in sorted(set(multiple) - set(precisions)):
            problems.append(f"runtime.rank_multiple.{precision}: {precision!r} is not one of precisions {precisions}")
    values = multiple.values() if isinstance(multiple, dict) else [multiple]
    if "simd" in values and data["target"]["transport"] != "local":
        problems.append("runtime.rank_multiple: simd is detected on this host, so only for a local target; "
                        "give the board's multiple as an integer")

    budgets = data.get("budgets") or {}
    if budgets.get("latency_ms") == 0:
        problems.append("budgets.latency_ms: must be positive (or null for no latency budget)")
    for key, parse in (("mac_budget", parse_count), ("memory_budget", parse_bytes)):
        value = budgets.get(key)
        if value is None:
            continue
        try:
            amount = parse(str(value), key.replace("_", " "))
        except UserInputError as exc:
            problems.append(f"budgets.{key}: {exc}")
            continue
        if amount <= 1:
            problems.append(
                f"budgets.{key}: {value!r} looks like a fraction; a profile budget must be absolute "
                f"(pass fractions on the command line, e.g. --{key.replace('_', '-')} 0.5)"
            )

    target = data["target"]
    url = target.get("url")
    if target["transport"] == "ssh":
        if not url or not url.startswith("ssh://") or len(url) <= len("ssh://"):
            problems.append(f"target.url: an ssh target needs a URL like ssh://user@host[:port], got {url!r}")
    elif target["transport"] == "local" and url:
        problems.append(f"target.url: a local target takes no URL, got {url!r}")
    return problems
