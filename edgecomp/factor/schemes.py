"""Matricizations of a layer's weight and the two factors of its truncated SVD.

For a conv weight W of shape (f, c, kh, kw):
  spatial (Tai et al.):  M[(c,i), (f,j)] = W[f, c, i, j]       M is (c*kh) x (f*kw)
  channel (Zhang et al.): M[f, (c,i,j)]  = W[f, c, i, j]       M is f x (c*kh*kw)
  linear (Linear / 1x1):  M = W reshaped to (out, in)
With M = U diag(sigma) V^T, each factored layer carries P = U diag(sigma) and V, so that any subset
J of components with per-component scales m_j gives the weight sum_{j in J} m_j P_j V_j^T
(COBLA eq. 5-6). The factor weights below are exact: at full rank the factored layer reproduces W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def matricize(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "spatial":
        f, c, kh, kw = weight.shape
        return weight.permute(1, 2, 0, 3).reshape(c * kh, f * kw)
    if scheme in ("channel", "linear"):
        return weight.reshape(weight.shape[0], -1)
    raise ValueError(f"unknown scheme {scheme!r}")


def unmatricize(matrix: torch.Tensor, scheme: str, weight_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of `matricize` (differentiable: the COBLA gradient flows through it)."""
    if scheme == "spatial":
        f, c, kh, kw = weight_shape
        return matrix.reshape(c, kh, f, kw).permute(2, 0, 1, 3)
    return matrix.reshape(weight_shape)


@dataclass
class Spectrum:
    """P = U diag(sigma) (rows x K), V (cols x K), sigma (K,) of one layer's matricization."""

    P: torch.Tensor
    V: torch.Tensor
    sigma: torch.Tensor


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise UserInputError naming `what` (e.g. "layer 'conv2' weight") when it holds NaN or inf values:
    an SVD of it cannot converge, and a model with such weights computes nothing meaningful."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    from edgecomp.errors import UserInputError

    nan = int(torch.isnan(tensor).sum())
    inf = int((~finite).sum()) - nan
    counts = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if part)
    raise UserInputError(f"{what} has {counts} values (of {tensor.numel()}): the weights are corrupt "
                         "(e.g. a diverged training run); load finite weights")


def svd_factors(weight: torch.Tensor, scheme: str, name: str | None = None) -> Spectrum:
    """SVD of the matricization in float64 (accuracy matters more than speed here).

    `name` (the layer's) goes into the error raised for NaN or infinite weights."""
    check_finite(weight.detach(), f"layer {name!r} weight" if name else "a layer weight")
    matrix = matricize(weight.detach().to(torch.float64), scheme)
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    return Spectrum(P=U * S, V=Vh.T, sigma=S)


def factor_weights(
    weight: torch.Tensor,
    scheme: str,
    components: torch.Tensor,
    scales: torch.Tensor | None = None,
    spectrum: Spectrum | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (first, second) of the factored layer that keeps `components` (indices into the spectrum).

    `scales` multiplies each kept P_j (COBLA's second step: P_j <- m_hat_j P_j).
    Shapes: spatial (r, c, kh, 1), (f, r, 1, kw); channel (r, c, kh, kw), (f, r, 1, 1);
    linear (r, in), (out, r) — reshaped to (r, c, 1, 1), (f, r, 1, 1) for 1x1 convs by the caller.
    """
    spec = spectrum if spectrum is not None else svd_factors(weight, scheme)
    idx = torch.as_tensor(components, dtype=torch.long)
    P = spec.P[:, idx]
    V = spec.V[:, idx]
    if scales is not None:
        P = P * torch.as_tensor(scales, dtype=P.dtype)
    r = idx.numel()
    dtype = weight.dtype
    if scheme == "spatial":
        f, c, kh, kw = weight.shape
        first = P.T.reshape(r, c, kh, 1)
        second = V.reshape(f, kw, r).permute(0, 2, 1).reshape(f, r, 1, kw)
    elif scheme == "channel":
        f = weight.shape[0]
        first = V.T.reshape(r, *weight.shape[1:])
        second = P.reshape(f, r, 1, 1)
    elif scheme == "linear":
        first = V.T.contiguous()
        second = P.contiguous()
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    return first.contiguous().to(dtype), second.contiguous().to(dtype)
