"""Tucker-2 factored convolution (Kim et al. 2016) as three plain Conv2d layers.

For W ~= G x_0 U_f x_1 U_c (edgecomp.factor.tucker), the conv y = W * x + b becomes

    z1 = U_c^T x          1x1 conv, c -> r1, no bias, at the input resolution
    z2 = G * z1           kh x kw conv, r1 -> r2, the original stride / padding / dilation / padding mode
    y  = U_f z2 + b       1x1 conv, r2 -> f, the original bias

which is exact when W is: a 1x1 map without bias commutes with the spatial padding (zeros, reflect,
replicate and circular padding only rearrange or zero positions), so padding z1 equals mapping the
padded x. The exported graph is three ordinary Conv nodes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from edgecomp.factor.schemes import check_finite
from edgecomp.factor.tucker import Tucker2Result, tucker2_hooi, tucker2_hosvd


def _check_conv(conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"Tucker2Conv2d replaces an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"Tucker-2 factoring needs groups == 1 (a dense kernel), got groups={conv.groups}")


class Tucker2Conv2d(nn.Sequential):
    """1x1 (c -> r1), kh x kw (r1 -> r2), 1x1 (r2 -> f) convolutions replacing `conv`, weighted by `result`."""

    def __init__(self, conv: nn.Conv2d, result: Tucker2Result):
        _check_conv(conv)
        f, c, kh, kw = conv.weight.shape
        r1, r2 = result.r1, result.r2
        if result.U_in.shape[0] != c or result.U_out.shape[0] != f or result.core.shape != (r2, r1, kh, kw):
            raise ValueError(f"factorization shapes U_out {result.U_out.shape}, core {result.core.shape}, "
                             f"U_in {result.U_in.shape} do not fit the conv's kernel {tuple(conv.weight.shape)}")
        like = {"dtype": conv.weight.dtype, "device": conv.weight.device}
        first = nn.Conv2d(c, r1, 1, bias=False, **like)
        core = nn.Conv2d(r1, r2, (kh, kw), stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                         bias=False, padding_mode=conv.padding_mode, **like)
        last = nn.Conv2d(r2, f, 1, bias=conv.bias is not None, **like)
        with torch.no_grad():
            first.weight.copy_(torch.as_tensor(result.U_in.T.reshape(r1, c, 1, 1)))
            core.weight.copy_(torch.as_tensor(result.core))
            last.weight.copy_(torch.as_tensor(result.U_out.reshape(f, r2, 1, 1)))
            if conv.bias is not None:
                last.bias.copy_(conv.bias)
        super().__init__(first, core, last)
        self.r1, self.r2 = r1, r2
        self.relative_error = float(result.rel_error)  # ||W - W_hat||_F / ||W||_F of the fit (nan: skeleton)
        self.train(conv.training)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, r1: int, r2: int, method: Literal["hooi", "hosvd"] = "hooi",
                  **hooi_options) -> Tucker2Conv2d:
        """Fit W = conv.weight (in float64) by HOSVD, or HOOI started from it, and build the layers.

        hooi_options (max_iter, tol) go to `tucker2_hooi`. Raises ValueError for groups != 1 or ranks
        outside 1..c / 1..f, UserInputError for a kernel with NaN or infinite values.
        """
        _check_conv(conv)
        check_finite(conv.weight.detach(), "a conv weight")
        kernel = conv.weight.detach().to("cpu", torch.float64).numpy()
        if method == "hooi":
            result = tucker2_hooi(kernel, r1, r2, **hooi_options)
        elif method == "hosvd":
            if hooi_options:
                raise ValueError(f"options {sorted(hooi_options)} apply to method 'hooi' only")
            result = tucker2_hosvd(kernel, r1, r2)
        else:
            raise ValueError(f"method must be 'hooi' or 'hosvd', got {method!r}")
        return cls(conv, result)

    def extra_repr(self) -> str:
        return f"tucker2, r1={self.r1}, r2={self.r2}"
