"""CP-factored convolution (Lebedev et al., "Speeding-up convolutional neural networks using fine-tuned
CP-decomposition", ICLR 2015): a Conv2d kernel K [f, c, kh, kw] ~ sum_r lambda_r F[:, r] o C[:, r] o
V[:, r] o H[:, r] (`edgecomp.factor.cp`) runs as four plain convolutions

    1x1 conv c -> R (weights C^T, no bias)
    depthwise kh x 1 (R groups, weights V; the conv's stride/padding/dilation in height)
    depthwise 1 x kw (R groups, weights H; the conv's stride/padding/dilation in width)
    1x1 conv R -> f (weights F diag(lambda), the conv's bias)

which is exactly the conv with kernel [[lambda; F, C, V, H]]: the 1x1 conv has no bias and acts per pixel,
so padding its output equals padding its input (any padding mode), and the kh x 1 filter leaves widths
alone. Costs are linear in R (`cp_costs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgecomp.factor.cp import CPInputError, CPResult, cp_als, cp_spals

Pair = int | tuple[int, int]


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1, as nn.Conv2d."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def cp_costs(f: int, c: int, kh: int, kw: int, h_in: int, w_in: int, stride: Pair = 1, padding: Pair = 0,
             dilation: Pair = 1) -> tuple[int, int]:
    """(MACs, parameters) of ONE rank-1 term of a CPConv2d for an h_in x w_in input (biases excluded):

        MACs   = c H W + kh H_out W + kw H_out W_out + f H_out W_out
        params = c + kh + kw + f

    (1x1 at the input resolution H x W; the kh x 1 depthwise gives H_out x W; the 1 x kw gives
    H_out x W_out; the last 1x1 runs at H_out x W_out.) H_out, W_out as nn.Conv2d computes them.
    """
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h_out = conv_output_size(h_in, kh, sh, ph, dh)
    w_out = conv_output_size(w_in, kw, sw, pw, dw)
    if h_out < 1 or w_out < 1:
        raise CPInputError(f"a {kh}x{kw} conv (stride {stride}, padding {padding}, dilation {dilation}) "
                           f"has no output for a {h_in}x{w_in} input")
    macs = c * h_in * w_in + kh * h_out * w_in + kw * h_out * w_out + f * h_out * w_out
    return macs, c + kh + kw + f


def _check_conv(conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise CPInputError(f"CP factoring needs an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise CPInputError(f"CP factoring needs an ungrouped conv, this one has groups={conv.groups}")


class CPConv2d(nn.Sequential):
    """The four convolutions of a rank-R CP fit of `conv`'s kernel (module docstring), in `conv`'s dtype and
    device. `result` must be a fit of conv.weight's shape [f, c, kh, kw]; lambda goes into the last 1x1.
    `relative_error` is the fit's ||K - K_R|| / ||K||. Without a result, `rank` gives the architecture only
    (weights uninitialized: a skeleton to load a state dict into; relative_error is then NaN)."""

    def __init__(self, conv: nn.Conv2d, result: CPResult | None = None, *, rank: int | None = None):
        _check_conv(conv)
        f, c, kh, kw = conv.weight.shape
        if result is not None and result.shape != (f, c, kh, kw):
            raise CPInputError(f"the CP fit is of a {result.shape} kernel, the conv's is {(f, c, kh, kw)}")
        if (result is None) == (rank is None):
            raise CPInputError("give exactly one of a CP fit and a rank")
        rank = result.rank if result is not None else int(rank)
        (sh, sw), (dh, dw) = conv.stride, conv.dilation
        pad_h: Any = conv.padding if isinstance(conv.padding, str) else (conv.padding[0], 0)
        pad_w: Any = conv.padding if isinstance(conv.padding, str) else (0, conv.padding[1])
        like = {"dtype": conv.weight.dtype, "device": conv.weight.device}
        mode = conv.padding_mode
        skip = nn.utils.skip_init
        super().__init__(
            skip(nn.Conv2d, c, rank, 1, bias=False, **like),
            skip(nn.Conv2d, rank, rank, (kh, 1), stride=(sh, 1), padding=pad_h, dilation=(dh, 1), groups=rank,
                 bias=False, padding_mode=mode, **like),
            skip(nn.Conv2d, rank, rank, (1, kw), stride=(1, sw), padding=pad_w, dilation=(1, dw), groups=rank,
                 bias=False, padding_mode=mode, **like),
            skip(nn.Conv2d, rank, f, 1, bias=conv.bias is not None, **like),
        )
        self.rank = rank
        self.relative_error = float("nan")
        if result is not None:
            self.load_fit(result, conv.bias)

    def load_fit(self, result: CPResult, bias: torch.Tensor | None = None) -> None:
        """Set the four weights from a rank-R fit of this layer's kernel (and the last conv's bias)."""
        f, c = self[3].out_channels, self[0].in_channels
        kh, kw, rank = self[1].kernel_size[0], self[2].kernel_size[1], self.rank
        if result.shape != (f, c, kh, kw) or result.rank != rank:
            raise CPInputError(f"a rank-{result.rank} fit of a {result.shape} kernel does not fit a rank-{rank} "
                               f"CPConv2d of a {(f, c, kh, kw)} kernel")
        a_f, a_c, a_h, a_w = result.factors
        like = {"dtype": self[0].weight.dtype, "device": self[0].weight.device}

        def tensor(array: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array).reshape(shape), **like)

        with torch.no_grad():
            self[0].weight.copy_(tensor(a_c.T, (rank, c, 1, 1)))
            self[1].weight.copy_(tensor(a_h.T, (rank, 1, kh, 1)))
            self[2].weight.copy_(tensor(a_w.T, (rank, 1, 1, kw)))
            self[3].weight.copy_(tensor(a_f * result.weights, (f, rank, 1, 1)))
            if bias is not None and self[3].bias is not None:
                self[3].bias.copy_(bias.detach())
        self.relative_error = float(result.relative_error)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int, solver: str = "als", **options) -> CPConv2d:
        """Fit conv.weight (in float64) with `cp_als` or `cp_spals` (`options` go to the solver) and build."""
        _check_conv(conv)
        solvers = {"als": cp_als, "spals": cp_spals}
        if solver not in solvers:
            raise CPInputError(f"solver must be 'als' or 'spals', got {solver!r}")
        kernel = conv.weight.detach().to("cpu", torch.float64).numpy()
        return cls(conv, solvers[solver](kernel, rank, **options))

    def extra_repr(self) -> str:
        return f"rank={self.rank}, relative_error={self.relative_error:.4g}"
