"""The PyTorch eager reference: the nn.Module itself, on CUDA when available, else the CPU.

Each call copies the batch to the device, runs forward under torch.inference_mode(), brings the
first output back to the host and calls torch.cuda.synchronize() (CUDA kernels are asynchronous:
without it a timer would stop before the GPU finished).
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch
from torch import nn


class TorchBackend:
    runtime = "pytorch"

    def __init__(self, module: nn.Module, device: str | None = None, *, label: str = "pytorch"):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        self.version = torch.__version__
        self.fixed_batch = None
        self.label = label
        self._cuda = self.device.type == "cuda"

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            out = self.module(t)
            if isinstance(out, (tuple, list)):
                out = out[0]
            result = out.float().cpu().numpy()
        if self._cuda:
            torch.cuda.synchronize(self.device)
        return result

    def info(self) -> dict[str, Any]:
        name = torch.cuda.get_device_name(self.device) if self._cuda else platform.processor() or platform.machine()
        return {
            "runtime": self.runtime,
            "version": self.version,
            "providers_requested": [str(self.device)],
            "providers_used": [str(self.device)],
            "device_name": name,
            "threads": torch.get_num_threads(),
        }

    def gpu_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device)) if self._cuda else None

    def close(self) -> None:
        self.module = None
