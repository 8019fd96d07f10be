"""An .onnx model behind the nn.Module call interface, run by ONNX Runtime on this host's CPU.

PyTorch-side code that takes a module (edgecomp.finetune.evaluate: top-1/top-5 and loss) scores an
output directory's model.onnx with it, without rebuilding the model in PyTorch, i.e. without running
any code the directory's recipe names. The session is the harness's own (runtime.backends).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.runtime import agent
from edgecomp.runtime.backends import open_onnxruntime


class OnnxRuntimeModule(nn.Module):
    """forward(x) = the ONNX model's first output on x (a float32 batch), computed by ONNX Runtime."""

    def __init__(self, path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        super().__init__()
        self.path = Path(path)
        self.runner = open_onnxruntime(self.path, providers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        step = self.runner.fixed_batch or max(len(batch), 1)
        try:
            out = agent.run_all(self.runner.run, batch, step, self.runner.fixed_batch)
        except Exception as exc:  # onnxruntime's own error types (InvalidArgument, Fail, ...)
            raise UserInputError(f"{self.path} cannot run on inputs of shape {tuple(batch.shape)} "
                                 f"(its input is {self.runner.input_shape}): {str(exc).splitlines()[0]}") from exc
        return torch.from_numpy(np.asarray(out))


def evaluation_module(target: str, weights: str | None = None, *, trust_pickle: bool = False,
                      trust_code: bool = False) -> tuple[nn.Module, str]:
    """(module, what runs it) for scoring TARGET: an output directory's model.onnx in ONNX Runtime when it
    has one (no code runs), else the PyTorch model (edgecomp.factor.load_model_or_outdir decides what
    may be rebuilt)."""
    from edgecomp.factor import load_model_or_outdir
    from edgecomp.factor.recipe import is_outdir_target
    from edgecomp.outdir import ONNX_FILE

    onnx = Path(target) / ONNX_FILE
    if is_outdir_target(target, weights) and onnx.is_file():
        return OnnxRuntimeModule(onnx), f"onnxruntime ({onnx})"
    loaded = load_model_or_outdir(target, weights, trust_pickle=trust_pickle, trust_code=trust_code)
    return loaded.module, "pytorch"
