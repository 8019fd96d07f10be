"""Find every Conv2d and Linear a forward pass runs, with its shapes and hyper-parameters.

Tracing uses forward hooks on a real forward pass of zeros with the given input shape, so any
control flow the model has is followed exactly as it runs. A module called several times (shared
weights) is one layer with several calls; its MACs are the sum over calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgecomp.errors import UserInputError


@dataclass(frozen=True)
class Call:
    """One invocation of a layer: per-sample input and output shapes (batch dimension removed)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class LayerInfo:
    name: str
    kind: str  # "conv2d" | "linear"
    in_channels: int  # in_features for Linear
    out_channels: int  # out_features for Linear
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    padding_mode: str = "zeros"
    calls: list[Call] = field(default_factory=list)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.calls[0].in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.calls[0].out_shape

    @property
    def weight_params(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw

    @property
    def params(self) -> int:
        return self.weight_params + (self.out_channels if self.bias else 0)

    @property
    def is_pointwise(self) -> bool:
        return self.kind == "linear" or self.kernel_size == (1, 1)

    def output_positions(self, call: Call) -> int:
        """Number of output positions per sample (H_out*W_out for conv, leading dims for Linear)."""
        n = 1
        for d in call.out_shape[:-1] if self.kind == "linear" else call.out_shape[1:]:
            n *= d
        return n

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample: output elements x (C_in/groups * kh * kw)."""
        kh, kw = self.kernel_size
        per_output = (self.in_channels // self.groups) * kh * kw
        return sum(self.output_positions(c) * self.out_channels * per_output for c in self.calls)


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def describe_module(name: str, module: nn.Module) -> LayerInfo:
    """Hyper-parameters of a Conv2d or Linear (no shapes: those come from tracing)."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):  # 'same' / 'valid': resolve to explicit numbers
            if module.padding == "valid":
                padding = (0, 0)
            else:
                padding = tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
        else:
            padding = _pair(module.padding)
        return LayerInfo(
            name=name,
            kind="conv2d",
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            kernel_size=_pair(module.kernel_size),
            stride=_pair(module.stride),
            padding=padding,
            dilation=_pair(module.dilation),
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    return LayerInfo(
        name=name,
        kind="linear",
        in_channels=module.in_features,
        out_channels=module.out_features,
        bias=module.bias is not None,
    )


def trace_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """Run one forward pass of zeros and return the Conv2d/Linear layers in execution order."""
    if not input_shape or any(int(d) <= 0 for d in input_shape):
        raise UserInputError(f"input shape must have positive dimensions, got {input_shape}")
    named = {m: n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    infos: dict[str, LayerInfo] = {}
    order: list[str] = []

    def hook(module, inputs, output):
        name = named[module]
        if name not in infos:
            infos[name] = describe_module(name, module)
            order.append(name)
        x = inputs[0]
        infos[name].calls.append(Call(tuple(x.shape[1:]), tuple(output.shape[1:])))

    handles = [m.register_forward_hook(hook) for m in named]
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape, dtype=dtype, device=device))
    except Exception as exc:
        raise UserInputError(
            f"the model does not run on an input of shape {tuple(input_shape)}: {type(exc).__name__}: {exc}. "
            "Check --input-shape (N,C,H,W)."
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [infos[n] for n in order]
