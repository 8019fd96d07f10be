"""Optional dependencies: imported only where used, each named with the one command that installs it.

OPTIONAL lists them by package name. `require(package)` imports the package's module (the first of its
module layouts that imports) or raises MissingDependencyError, exit code 2, with the install hint.
The on-device agent (runtime/agent.py) stays stdlib-only and does its own imports.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from edgecomp.errors import MissingDependencyError


@dataclass(frozen=True)
class OptionalPackage:
    """An optional package: the modules it may be imported as (newest layout first), what it is for, its install."""

    modules: tuple[str, ...]
    purpose: str
    install: str


OPTIONAL: dict[str, OptionalPackage] = {
    "tensorrt": OptionalPackage(("tensorrt",), "TensorRT (building and running engines)", 'pip install "edgecomp[tensorrt]"'),
    # cuda-python >= 12.6 has cuda.bindings.runtime; older releases cuda.cudart.
    "cuda-python": OptionalPackage(("cuda.bindings.runtime", "cuda.cudart"),
                                   "cuda-python (CUDA device buffers for TensorRT)", 'pip install "edgecomp[tensorrt]"'),
    "onnxslim": OptionalPackage(("onnxslim",), "ONNX simplification (onnxslim)", 'pip install "edgecomp[simplify]"'),
}


def install_hint(package: str) -> str:
    """The command that installs `package` (a key of OPTIONAL)."""
    return OPTIONAL[package].install


def missing(package: str, detail: str | None = None) -> MissingDependencyError:
    """The error for `package` not being usable here (`detail`: why, e.g. the ImportError)."""
    entry = OPTIONAL[package]
    what = entry.purpose if detail is None else f"{entry.purpose} ({detail})"
    return MissingDependencyError(what, entry.install)


def require(package: str) -> ModuleType:
    """Import the optional `package` (a key of OPTIONAL); MissingDependencyError naming its install if it cannot."""
    entry = OPTIONAL[package]
    first: ImportError | None = None
    for name in entry.modules:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            first = first or exc
    raise missing(package, str(first)) from first
