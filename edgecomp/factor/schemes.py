"""Matricizations of a layer's weight and the two factors of its truncated SVD.

For a conv weight W of shape (f, c, kh, kw):
  spatial (Tai et al.):  M[(c,i), (f,j)] = W[f, c, i, j]       M is (c*kh) x (f*kw)
  channel (Zhang et al.): M[f, (c,i,j)]  = W[f, c, i, j]       M is f x (c*kh*kw)
  linear (Linear / 1x1):  M = W reshaped to (out, in)
With M = U diag(sigma) V^T, each factored layer carries P = U diag(sigma) and V, so that any subset
J of components with per-component scales m_j gives the weight sum_{j in J} m_j P_j V_j^T
(COBLA eq. 5-6). The factor weights below are exact: at full rank the factored layer reproduces W.

cp (edgecomp.factor.cp): a rank-R CP fit W ~ sum_r lambda_r a_r o b_r o c_r o d_r (f, c, kh, kw modes)
is the same kind of sum in the channel matricization M[f, (c,i,j)]: P_r = lambda_r a_r and
V_r = b_r (x) c_r (x) d_r (one column of the Khatri-Rao product), with sigma = lambda (descending).
The terms are not orthogonal, so sum_{j>r} sigma_j^2 is only a proxy of the truncation error, and
`Spectrum.cp` keeps the fit itself for the build (which refits at the chosen rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgecomp.factor.cp import CPResult

CP_SOLVERS = ("als", "spals")


def matricize(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "spatial":
        f, c, kh, kw = weight.shape
        return weight.permute(1, 2, 0, 3).reshape(c * kh, f * kw)
    if scheme in ("channel", "linear", "cp"):
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
    """P = U diag(sigma) (rows x K), V (cols x K), sigma (K,) of one layer's matricization.

    cp: the CP fit these were made from (scheme "cp" only; module docstring).
    tucker2: scheme "tucker2" only, the layer's choices (edgecomp.ranks.choices.ChoiceLayer); P, V and
    sigma are then empty (a Tucker-2 layer has no matricization spectrum).
    choices: the layer's ChoiceLayer under scheme "tucker2" (the same as `tucker2`) or "auto" (P, V, sigma
    empty); parts: scheme "auto" only, the Spectrum of each ranked scheme its choices come from ("spatial",
    "channel": SVDs; "cp": the CP fit), which the build of the chosen scheme reads."""

    P: torch.Tensor
    V: torch.Tensor
    sigma: torch.Tensor
    cp: CPResult | None = None
    tucker2: object | None = None
    choices: object | None = None
    parts: dict | None = None


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


def cp_spectrum(result: CPResult) -> Spectrum:
    """A CP fit of an (f, c, kh, kw) kernel as a Spectrum of the channel matricization (module docstring):
    P = A_f diag(lambda), V = the Khatri-Rao product of A_c, A_kh, A_kw, sigma = lambda."""
    from edgecomp.factor.cp import khatri_rao

    a_f, *rest = result.factors
    P = torch.from_numpy(np.ascontiguousarray(a_f * result.weights))
    V = torch.from_numpy(np.ascontiguousarray(khatri_rao(rest)))
    return Spectrum(P=P, V=V, sigma=torch.from_numpy(np.array(result.weights, dtype=np.float64)), cp=result)


def cp_factors(weight: torch.Tensor, rank: int, solver: str = "als", seed: int = 0, name: str | None = None,
               **options) -> Spectrum:
    """Rank-`rank` CP fit (float64) of a conv kernel by `solver` ("als": cp_als, "spals": cp_spals; seeded,
    `options` go to the solver), as a Spectrum (cp_spectrum)."""
    from edgecomp.errors import UserInputError
    from edgecomp.factor.cp import cp_als, cp_spals

    if solver not in CP_SOLVERS:
        raise UserInputError(f"unknown CP solver {solver!r}; choose one of {', '.join(CP_SOLVERS)}")
    check_finite(weight.detach(), f"layer {name!r} weight" if name else "a layer weight")
    kernel = weight.detach().to("cpu", torch.float64).numpy()
    fit = (cp_als if solver == "als" else cp_spals)(kernel, int(rank), seed=seed, **options)
    return cp_spectrum(fit)


def cp_truncation_errors(kernel: np.ndarray, fit: CPResult) -> np.ndarray:
    """Squared errors ||T - X_r||_F^2 of the reconstructions X_r from the r largest-weight terms of `fit`, for
    r = 1..R, exactly and without forming any X_r (CP terms are not nested: X_r is not the best rank-r fit,
    and its error need not decrease with r): edgecomp.factor.cp.truncation_profile's relative errors, times
    ||T||_F, squared."""
    from edgecomp.factor.cp import truncation_profile

    t = np.asarray(kernel, dtype=np.float64)
    return (truncation_profile(t, fit) * float(np.linalg.norm(t))) ** 2


def cp_default_rank(shape: tuple[int, ...]) -> int:
    """The CP rank fitted when only the kernel's shape is known (svd_factors(w, "cp"), e.g. in LC's C step):
    the parameter break-even rank ceil(f c kh kw / (f + c + kh + kw)), capped at min(f c, c kh kw, f kh kw).
    It is >= the layer's cost-based rank bound (edgecomp.graph.cost.cp_rank_bound), which also counts MACs."""
    f, c, kh, kw = (int(d) for d in shape)
    return max(1, min(-(-(f * c * kh * kw) // (f + c + kh + kw)), f * c, c * kh * kw, f * kh * kw))


def svd_factors(weight: torch.Tensor, scheme: str, name: str | None = None) -> Spectrum:
    """SVD of the matricization in float64 (accuracy matters more than speed here).

    Scheme "cp": a CP fit by ALS at cp_default_rank instead (the spectrum's sigma are its weights).
    `name` (the layer's) goes into the error raised for NaN or infinite weights."""
    if scheme == "cp":
        return cp_factors(weight, cp_default_rank(tuple(weight.shape)), name=name)
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
