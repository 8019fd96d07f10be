"""edgecomp: fit a trained PyTorch model to an edge device's budgets, export it, prove it on the target.

Data flows one way through the packages:
profile (edgecomp.profiles) -> model graph (edgecomp.graph) -> cost model (edgecomp.graph.cost)
-> rank selection (edgecomp.ranks, pure numpy) -> factored model (edgecomp.factor)
-> fine-tune (edgecomp.finetune) -> convert (edgecomp.exporters) -> harness (edgecomp.runtime) -> report.

The Python API (docs/api.md), the same steps the CLI runs:

    import edgecomp
    profile = edgecomp.load_profile("jetson")
    result = edgecomp.compress(model, device=profile, input_shape=(1, 3, 224, 224), data=train_loader,
                               mac_budget=0.5)
    result.model, result.ranks, result.report; result.save("out/")
    onnx_path = edgecomp.convert(result.model, "model.onnx", input_shape=(1, 3, 224, 224)).onnx_path
    verdict = edgecomp.verify(onnx_path, device=profile, target="local", latency_budget_ms=5)
    edgecomp.export("zoo:resnet18", device="jetson", outdir="out")   # the whole pipeline

Names are imported on first use, so `import edgecomp` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "load_profile": "edgecomp.api.devices",
    "list_profiles": "edgecomp.api.devices",
    "DeviceProfile": "edgecomp.api.devices",
    "compress": "edgecomp.api.compressing",
    "CompressionResult": "edgecomp.api.compressing",
    "CoblaOptions": "edgecomp.compression.cobla",
    "LCOptions": "edgecomp.compression.methods",
    "convert": "edgecomp.api.converting",
    "ConvertResult": "edgecomp.api.converting",
    "OutputDir": "edgecomp.api.converting",
    "verify": "edgecomp.api.verifying",
    "profile": "edgecomp.api.verifying",
    "MeasureSettings": "edgecomp.runtime.harness",
    "VerifyResult": "edgecomp.runtime.report",
    "ProfileReport": "edgecomp.runtime.report",
    "export": "edgecomp.api.exporting",
    "ExportResult": "edgecomp.api.exporting",
    "EdgecompError": "edgecomp.errors",
    "UserInputError": "edgecomp.errors",
    "InfeasibleBudgetError": "edgecomp.errors",
}
__all__ = [
    "__version__",
    "load_profile",
    "list_profiles",
    "DeviceProfile",
    "compress",
    "CompressionResult",
    "CoblaOptions",
    "LCOptions",
    "convert",
    "ConvertResult",
    "OutputDir",
    "verify",
    "profile",
    "MeasureSettings",
    "VerifyResult",
    "ProfileReport",
    "export",
    "ExportResult",
    "EdgecompError",
    "UserInputError",
    "InfeasibleBudgetError",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from edgecomp.api.compressing import CompressionResult, compress
    from edgecomp.api.converting import ConvertResult, OutputDir, convert
    from edgecomp.api.devices import DeviceProfile, list_profiles, load_profile
    from edgecomp.api.exporting import ExportResult, export
    from edgecomp.api.verifying import profile, verify
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import LCOptions
    from edgecomp.errors import EdgecompError, InfeasibleBudgetError, UserInputError
    from edgecomp.runtime.harness import MeasureSettings
    from edgecomp.runtime.report import ProfileReport, VerifyResult


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecomp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
