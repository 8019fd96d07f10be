"""ONNX Runtime on this machine with exactly the execution providers a device profile names.

The session itself is the agent's OrtRunner (runtime/agent.py), so in-process and on-target runs
share one implementation: providers missing from onnxruntime.get_available_providers() are an
error (never a silent CPU fallback), threads -> SessionOptions.intra_op_num_threads, the graph
optimisation level -> SessionOptions.graph_optimization_level, and `info()` records
onnxruntime.__version__ and session.get_providers() (the providers actually used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgecomp.errors import MissingDependencyError, UserInputError
from edgecomp.runtime import agent
from edgecomp.runtime.errors import TargetDependencyError


def open_onnxruntime(
    model_path: str | Path,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    *,
    threads: int | None = None,
    graph_optimization_level: str = "all",
) -> agent.OrtRunner:
    """An OrtRunner (a Backend) for `model_path`; edgecomp errors for missing packages/EPs and bad models."""
    try:
        return agent.OrtRunner(model_path, list(providers), threads=threads,
                               graph_optimization_level=graph_optimization_level)
    except agent.AgentError as exc:
        if exc.kind == "missing_module":
            raise MissingDependencyError(str(exc.details.get("modules", ["onnxruntime"])[0]),
                                         "pip install onnxruntime") from None
        if exc.kind == "missing_provider":
            raise TargetDependencyError(
                f"{exc} -- pass --providers to measure with other providers (recorded in the report)"
            ) from None
        raise UserInputError(str(exc)) from None
