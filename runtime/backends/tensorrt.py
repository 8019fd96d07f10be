"""TensorRT engines on this machine (TensorRT 10 API, CUDA memory through cuda-python).

The runner is the agent's TrtRunner (runtime/agent.py): deserialize_cuda_engine,
create_execution_context, set_input_shape, set_tensor_address, execute_async_v3 on a CUDA stream,
with host<->device copies inside each timed call. Both packages are imported lazily (edgecomp.optional;
the stdlib-only agent imports them itself).
"""

from __future__ import annotations

from pathlib import Path

from edgecomp.errors import MissingDependencyError, UserInputError
from edgecomp.optional import missing, require
from edgecomp.runtime import agent


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when tensorrt and cuda-python import and a CUDA device exists; else (False, why)."""
    try:
        tensorrt = require("tensorrt")
        cudart = require("cuda-python")
    except MissingDependencyError as exc:
        return False, str(exc)
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # pragma: no cover - driver-specific
        return False, f"CUDA is not usable: {exc}"
    if int(err) != 0 or count < 1:
        return False, "no CUDA device is visible"
    return True, tensorrt.__version__


def open_tensorrt(engine_path: str | Path) -> agent.TrtRunner:
    """A TrtRunner (a Backend) for a serialized engine; MissingDependencyError without tensorrt/cuda-python."""
    require("tensorrt")
    require("cuda-python")
    try:
        return agent.TrtRunner(str(engine_path))
    except agent.AgentError as exc:
        if exc.kind == "missing_module":
            raise missing("tensorrt", str(exc)) from None
        raise UserInputError(str(exc)) from None
