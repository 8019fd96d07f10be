"""In-process backends: ONNX Runtime (profile EPs), TensorRT engines, PyTorch eager reference.

Each returns an object with run(x) -> first output, info() and close() (see base.Backend).
"""

from edgecomp.runtime.backends.base import Backend
from edgecomp.runtime.backends.onnxruntime import open_onnxruntime
from edgecomp.runtime.backends.tensorrt import open_tensorrt, tensorrt_available
from edgecomp.runtime.backends.torch_eager import TorchBackend

__all__ = ["Backend", "TorchBackend", "open_onnxruntime", "open_tensorrt", "tensorrt_available"]
