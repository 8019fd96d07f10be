"""INT8 entropy calibration for TensorRT fed from numpy batches (TensorRT 10 Python API, cuda-python buffers).

IInt8EntropyCalibrator2 picks each activation's INT8 range by minimising the KL divergence between
the float activation histogram and its quantized version. TensorRT pulls batches through get_batch
(device pointers, one per network input) and stores the ranges in a calibration cache; when the
cache file exists it is read back and calibration is skipped (delete it after changing the data or
the model). Implicit calibration is deprecated since TensorRT 10.1 in favour of explicit (QDQ)
quantization, which exporters.ort_quant produces; both are supported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgecomp.errors import EdgecompError
from edgecomp.io import write_bytes
from edgecomp.optional import require


def load_cudart():
    """The CUDA runtime bindings of cuda-python (new `cuda.bindings` layout first, then the old one);
    MissingDependencyError with the install hint without it (edgecomp.optional)."""
    return require("cuda-python")


def cuda_check(cudart, result):
    """cuda-python calls return (error, *values); raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EdgecompError(f"CUDA runtime call failed: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def make_entropy_calibrator(trt, batches: Sequence[np.ndarray], input_name: str, cache_path: str | Path | None):
    """An IInt8EntropyCalibrator2 that feeds `batches` (equal-sized float32 arrays) to input `input_name`.

    Call .free() after the build to release its device buffer.
    """
    cudart = load_cudart()
    host = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    if not host or any(b.shape != host[0].shape for b in host):
        raise ValueError("calibration batches must be non-empty and of one shape")
    cache = Path(cache_path) if cache_path else None

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the pybind11 base class
            self.index = 0
            self.device = cuda_check(cudart, cudart.cudaMalloc(host[0].nbytes))

        def get_batch_size(self) -> int:
            return int(host[0].shape[0])

        def get_batch(self, names):
            if self.index >= len(host):
                return None  # tells TensorRT the calibration set is exhausted
            if list(names) != [input_name]:
                raise EdgecompError(f"calibration feeds only {input_name!r}; TensorRT asked for {list(names)}")
            batch = host[self.index]
            self.index += 1
            cuda_check(
                cudart,
                cudart.cudaMemcpy(
                    self.device, batch.ctypes.data, batch.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                ),
            )
            return [int(self.device)]

        def read_calibration_cache(self):
            if cache is not None and cache.is_file():
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data) -> None:
            if cache is not None:
                write_bytes(cache, bytes(data))

        def free(self) -> None:
            if self.device:
                cuda_check(cudart, cudart.cudaFree(self.device))
                self.device = 0

    return EntropyCalibrator()
