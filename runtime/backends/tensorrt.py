"""TensorRT engines on this machine (TensorRT 10 API, CUDA memory through cuda-python).

The runner is the agent's TrtRunner (runtime/agent.py): deserialize_cuda_engine,
create_execution_context, set_input_shape, set_tensor_address, execute_async_v3 on a CUDA stream,
with host<->device copies inside each timed call. Both packages are imported lazily.
"""

from __future__ import annotations

from pathlib import Path

from edgecomp.errors import MissingDependencyError, UserInputError
from edgecomp.runtime import agent

INSTALL = 'pip install "edgecomp[tensorrt]"'


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when tensorrt and cuda-python import and a CUDA device exists; else (False, why)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return False, f"tensorrt is not installed ({exc}); {INSTALL}"
    cudart = agent._cudart()
    if cudart is None:
        return False, f"cuda-python is not installed; {INSTALL}"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # pragma: no cover - driver-specific
        return False, f"CUDA is not usable: {exc}"
    if int(err) != 0 or count < 1:
        return False, "no CUDA device is visible"
    import tensorrt

    return True, tensorrt.__version__


def open_tensorrt(engine_path: str | Path) -> agent.TrtRunner:
    """A TrtRunner (a Backend) for a serialized engine; MissingDependencyError without tensorrt/cuda-python."""
    try:
        return agent.TrtRunner(str(engine_path))
    except agent.AgentError as exc:
        if exc.kind == "missing_module":
            raise MissingDependencyError(f"TensorRT ({exc})", INSTALL) from None
        raise UserInputError(str(exc)) from None
