"""CP (CANDECOMP/PARAFAC) decomposition of an N-way array by alternating least squares: exact (ALS) or
with each MTTKRP estimated from leverage-score samples of the Khatri-Rao product (SPALS, Cheng et al.,
"SPALS: fast alternating least squares via implicit leverage scores sampling", NIPS 2016; Cheng's thesis
ch. 3). Pure numpy; the torch layer built from a fit is `edgecomp.factor.cp_conv`.

Model (rank R, N modes, factors A_k of shape n_k x R with unit-norm columns, weights lambda >= 0):

    T  ~  X = [[lambda; A_1, ..., A_N]] = sum_r lambda_r a_1r o a_2r o ... o a_Nr

ALS update of mode n, all other factors fixed (the normal equations of min ||T_(n) - A KR_n^T||_F):

    A_n = T_(n) KR_n (V_n + ridge I)^-1,   KR_n = Khatri-Rao product of the A_k, k != n (in mode order),
                                          V_n  = Hadamard product of the Grams A_k^T A_k, k != n,

then lambda = the column norms of A_n and A_n <- A_n / lambda. T_(n) is the mode-n unfolding
(`np.moveaxis(T, n, 0).reshape(n_n, -1)`, C order), so row j of KR_n is prod_k A_k[i_k, :] for the
multi-index (i_k)_{k != n} that j encodes. M_n = T_(n) KR_n is the MTTKRP.

Degeneracy and the ridge. Since the other factors have unit columns, V_n has a unit diagonal and the
update of mode n (which carries lambda) minimizes exactly

    F(lambda, A) = ||T - X||_F^2 + ridge * ||lambda||^2                 (Tikhonov-regularized CP)

so every mode update, and the renormalization after it, never increases F: ALS is a descent method on F,
and `ridge` is dimensionless (both terms scale as ||T||^2). With ridge ~ 0 the best rank-R fit need not
exist (de Silva & Lim 2008): near the kernel's typical rank (the largest rank of a layer, its break-even
rank, is about prod n_k / sum n_k) ALS drives pairs of near-collinear terms to huge opposite norms that
cancel. On zoo:fmnist_cnn's kernels at their largest ranks the top-r terms of such a fit had relative errors
up to 1.8 (worse than no layer) and non-monotone in r, so neither the knapsack's spectrum (sigma = lambda)
nor the refit's start meant anything. Any ridge > 0 bounds ||lambda||^2 <= ||T||^2 / ridge once a mode has
been updated (F <= F(lambda = 0) = ||T||^2 from then on), which rules the divergence out. A fixed large
ridge would bias well-posed fits (every lambda shrinks by about 1 / (1 + ridge)), so the ridge is adaptive
(`_Degeneracy`): it starts at `ridge` (1e-9: plain ALS) and is raised through RIDGE_LADDER whenever the
current iterate's terms cancel (sum_r lambda_r^2 > 1.5 ||X||^2; 1 for orthogonal terms) and its truncation
profile (`prefix_errors`: the relative error of its top-r terms for r = 1..R, exact from the Grams in
O(R^2)) stops decreasing in r or starts at >= 1. A fit that raised its ridge is finally rescaled by the
least-squares factor alpha = <T, X> / ||X||^2 (undoing the common shrinkage; it can only lower the error).
Proximal ALS (adding rho (A_old, I)) is not used: it has the fixed points of plain ALS, so it damps the
iteration but cannot stop a divergence that lies in the objective. The factors stay normalized with lambda
apart: the ridge on balanced unnormalized factors, rho sum_n ||A_n||^2 = N rho sum_r lambda_r^(2/N), is
sparsity-promoting for N = 4 and, measured on features.1.0 (R = 181), kept 12 terms at rho = 1e-2 and
none at 3e-2.

Largest useful rank (`cp_rank_cap`): T is exactly a sum of min_n prod_{k != n} n_k rank-1 terms (its
fibres along the largest mode, each times unit vectors in the other modes), so terms past that cap cannot
lower the error; a fit asked for more fits that many and returns the rest with weight 0 (rank R is kept,
so callers' shapes hold).

Fit = 1 - ||T - X||_F / ||T||_F (so relative error = 1 - fit). ALS stops when
|fit_k - fit_{k-1}| <= tol * |fit_{k-1}|.

SPALS replaces M_n by an importance-sampled estimate (see `cp_spals`); the Gram inverse stays exact.
CP terms are not nested (no Eckart-Young): the best rank-r fit is not the top r terms of a rank-R fit,
hence `refit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgecomp.errors import UserInputError

Init = str | Sequence[np.ndarray]


class CPInputError(UserInputError, ValueError):
    """A tensor, rank or option that CP cannot fit. Also a ValueError, for numpy-style callers."""


@dataclass(frozen=True)
class SamplingStats:
    """What SPALS sampled: `samples` i.i.d. draws per mode update, `rows[n]` = the number of Khatri-Rao
    rows of mode n (prod_{k != n} n_k), `distinct_rows[n]` = mean distinct rows those draws hit (each
    distinct row is used once, weighted by its count: the work is proportional to it)."""

    samples: int
    rows: tuple[int, ...]
    distinct_rows: tuple[float, ...]
    fit_entries: int  # entries of T in the fixed sample that estimates the fit (all of T when it is small)
    control_variate: bool


@dataclass(frozen=True)
class CPResult:
    """A rank-R CP fit. weights: (R,) lambda, descending, >= 0; factors: A_k (n_k x R), unit-norm columns.

    fit_history: the fit after each iteration (ALS: exact; SPALS: estimated, see `cp_spals`).
    relative_error: the exact ||T - X||_F / ||T||_F of the returned factors (0 for an all-zero T).
    """

    weights: np.ndarray
    factors: list[np.ndarray]
    fit_history: list[float]
    relative_error: float
    iterations: int
    seconds: float
    method: str
    converged: bool
    sampling: SamplingStats | None = None
    ridge: float = 0.0  # the Tikhonov weight the fit ended with (module docstring; raised if it degenerated)

    @property
    def rank(self) -> int:
        return int(self.weights.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(a.shape[0]) for a in self.factors)

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)

    def reconstruct(self) -> np.ndarray:
        return cp_reconstruct(self.weights, self.factors)


@dataclass(frozen=True)
class RefitResult:
    """`refit`: relative errors of the r largest-weight terms as they were (`before`) and after ALS at
    rank r started from them (`after` <= `before`); `result` is the rank-r fit returned."""

    before: float
    after: float
    result: CPResult


# ---------------------------------------------------------------------------------------------- algebra


def khatri_rao(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """Column-wise Kronecker product of (n_k x R) matrices: row (i_1, ..., i_K) (C order, the last index
    fastest) is prod_k M_k[i_k, :]. Shape (prod n_k) x R."""
    out = np.asarray(matrices[0])
    for m in matrices[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


def unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n unfolding T_(n): n_n x prod_{k != n} n_k, the other modes in order, C order."""
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def mttkrp(tensor: np.ndarray, factors: Sequence[np.ndarray], mode: int) -> np.ndarray:
    """Exact M_n = T_(n) KR_n (n_n x R) without forming KR_n: contract T with one factor at a time, the
    largest mode first (one GEMM), then the others batched over r. Cost O(|T| R)."""
    others = sorted((k for k in range(tensor.ndim) if k != mode), key=lambda k: -tensor.shape[k])
    y = np.tensordot(tensor, factors[others[0]], axes=([others[0]], [0]))  # remaining modes..., R
    axes = [k for k in range(tensor.ndim) if k != others[0]]
    for k in others[1:]:
        y = np.einsum("...ir,ir->...r", np.moveaxis(y, axes.index(k), -2), factors[k])
        axes.remove(k)
    return y


def cp_reconstruct(weights: np.ndarray, factors: Sequence[np.ndarray]) -> np.ndarray:
    """X = sum_r lambda_r a_1r o ... o a_Nr, as X_(m) = A_m diag(lambda) KR_m^T with m the largest mode
    (so the Khatri-Rao product formed is the smallest one)."""
    weights = np.asarray(weights, dtype=np.float64)
    shape = tuple(a.shape[0] for a in factors)
    m = int(np.argmax(shape))
    others = [factors[k] for k in range(len(factors)) if k != m]
    x_m = (factors[m] * weights) @ khatri_rao(others).T
    return np.moveaxis(x_m.reshape((shape[m],) + tuple(s for k, s in enumerate(shape) if k != m)), 0, m)


def relative_error(tensor: np.ndarray, weights: np.ndarray, factors: Sequence[np.ndarray]) -> float:
    """Exact ||T - X||_F / ||T||_F (0 when T = X = 0, inf when T = 0 != X)."""
    tensor = np.asarray(tensor, dtype=np.float64)
    resid = float(np.linalg.norm(tensor - cp_reconstruct(weights, factors)))
    norm = float(np.linalg.norm(tensor))
    if norm == 0.0:
        return 0.0 if resid == 0.0 else math.inf
    return resid / norm


def prefix_errors(norm_t: float, weights: np.ndarray, gram: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Relative errors ||T - X_r||_F / ||T||_F of the first r terms, r = 1..R, in the given order:

        ||T - X_r||^2 = ||T||^2 - 2 sum_{j<=r} lambda_j b_j + sum_{j,k<=r} lambda_j lambda_k G_jk

    with G = the Hadamard product of all factor Grams (G_jk = <u_j, u_k>, u = the unit rank-1 terms) and
    b_j = <T, u_j>. O(R^2) given G and b (no reconstruction)."""
    w = np.asarray(weights, dtype=np.float64)
    if norm_t == 0.0:
        return np.zeros(w.size)
    quad = np.cumsum(np.cumsum((w[:, None] * w[None, :]) * gram, axis=0), axis=1).diagonal()
    resid2 = norm_t**2 - 2.0 * np.cumsum(w * inner) + quad
    return np.sqrt(np.maximum(resid2, 0.0)) / norm_t


def truncation_profile(tensor: np.ndarray, result: CPResult) -> np.ndarray:
    """Exact relative errors of the top-r terms of a fit (by weight, as `refit` keeps them), r = 1..R."""
    t = np.asarray(tensor, dtype=np.float64)
    weights, factors = _sorted(np.asarray(result.weights, dtype=np.float64), list(result.factors))
    gram = np.ones((weights.size, weights.size))
    for a in factors:
        gram = gram * (a.T @ a)
    inner = np.einsum("ir,ir->r", mttkrp(t, factors, 0), factors[0])
    return prefix_errors(float(np.linalg.norm(t)), weights, gram, inner)


def cp_rank_cap(shape: Sequence[int]) -> int:
    """prod(n_k) / max(n_k) = min_n prod_{k != n} n_k: T is exactly that many rank-1 terms (its fibres along
    the largest mode, each times unit vectors), so no fit needs more terms (module docstring)."""
    return int(math.prod(int(n) for n in shape) // max(int(n) for n in shape))


def leverage_scores(matrix: np.ndarray) -> np.ndarray:
    """Exact row leverage scores tau_i = ||U_i,:||^2, U = the left singular vectors of the column space
    (thin SVD, numerical rank at numpy's matrix_rank tolerance). sum_i tau_i = rank(matrix)."""
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return np.zeros(matrix.shape[0])
    keep = s > s[0] * max(matrix.shape) * np.finfo(np.float64).eps
    return np.einsum("ir,ir->i", u[:, keep], u[:, keep])


# ---------------------------------------------------------------------------------------------- checks


def _check(tensor, rank, max_iter: int, tol: float, ridge: float) -> np.ndarray:
    arr = np.asarray(tensor)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise CPInputError(f"CP needs a real numeric array, got dtype {arr.dtype}")
    if arr.ndim < 3:
        raise CPInputError(f"CP needs a tensor with at least 3 modes, got shape {arr.shape} (use an SVD)")
    if 0 in arr.shape:
        raise CPInputError(f"CP needs a non-empty tensor, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CPInputError("the tensor contains NaN or infinite values")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise CPInputError(f"CP rank must be an integer >= 1, got {rank!r}")
    if max_iter < 1:
        raise CPInputError(f"max_iter must be >= 1, got {max_iter}")
    if not (tol >= 0 and ridge >= 0):
        raise CPInputError(f"tol and ridge must be >= 0, got tol={tol}, ridge={ridge}")
    return arr.astype(np.float64, copy=False)


def _normalized(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(a, axis=0)
    return a / np.where(norms > 0, norms, 1.0), norms


def initial_factors(tensor: np.ndarray, rank: int, init: Init = "hosvd", seed: int = 0) -> list[np.ndarray]:
    """Unit-column starting factors. "hosvd": the leading min(R, n_k) left singular vectors of each
    unfolding T_(k) (eigenvectors of T_(k) T_(k)^T), padded with seeded Gaussian columns when R > n_k;
    "random": seeded Gaussian factors; a sequence of (n_k x R) arrays: those (a warm start)."""
    rng = np.random.default_rng(seed)
    if isinstance(init, str):
        if init not in ("hosvd", "random"):
            raise CPInputError(f"init must be 'hosvd', 'random' or a list of factors, got {init!r}")
        factors = []
        for k, n_k in enumerate(tensor.shape):
            if init == "random":
                a = rng.standard_normal((n_k, rank))
            else:
                t_k = unfold(tensor, k)
                _, vecs = np.linalg.eigh(t_k @ t_k.T)
                lead = vecs[:, ::-1][:, : min(rank, n_k)]
                a = np.hstack([lead, rng.standard_normal((n_k, rank - lead.shape[1]))])
            factors.append(_normalized(a)[0])
        return factors
    factors = [np.array(a, dtype=np.float64) for a in init]
    if len(factors) != tensor.ndim or any(a.shape != (n, rank) for a, n in zip(factors, tensor.shape)):
        raise CPInputError(f"init factors must have shapes {[(n, rank) for n in tensor.shape]}, "
                           f"got {[a.shape for a in factors]}")
    if not all(np.all(np.isfinite(a)) for a in factors):
        raise CPInputError("init factors contain NaN or infinite values")
    return [_normalized(a)[0] for a in factors]


def _zero_fit(tensor: np.ndarray, rank: int, init: Init, seed: int, method: str, start: float) -> CPResult:
    """T = 0: lambda = 0 reproduces it exactly (the factors are only placeholders)."""
    factors = initial_factors(tensor, rank, "random" if isinstance(init, str) else init, seed)
    return CPResult(np.zeros(rank), factors, [1.0], 0.0, 0, time.perf_counter() - start, method, True)


def _sorted(weights: np.ndarray, factors: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    order = np.argsort(-weights, kind="stable")
    return weights[order], [a[:, order] for a in factors]


def _hadamard_grams(grams: list[np.ndarray], skip: int) -> np.ndarray:
    v = np.ones_like(grams[0])
    for k, g in enumerate(grams):
        if k != skip:
            v = v * g
    return v


def _update(m: np.ndarray, v: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """A = M (V + ridge I)^-1 (V symmetric), then normalized: returns (A / lambda, lambda)."""
    a = np.linalg.solve(v + ridge * np.eye(v.shape[0]), m.T).T
    return _normalized(a)


# Ridge values tried, in order, once a fit degenerates (each ~3.2x the last); 1 halves every weight at most.
RIDGE_LADDER = tuple(float(x) for x in np.logspace(-2, 0, 5))
_BURN_IN = 3  # iterations a new ridge runs before its iterates are judged
_MONOTONE_SLACK = 1e-9  # prefix errors may rise by this much (roundoff, weight-0 terms) and still count as falling
# Degenerate terms cancel: sum lambda_r^2 exceeds ||X||^2 (equal for orthogonal terms); plain ALS at the largest
# ranks of zoo:fmnist_cnn reached 3.5-10 within 5 iterations. Below this ratio a rising profile is a transient.
_CANCELLATION = 1.5


class _Degeneracy:
    """The adaptive ridge of the module docstring. After each iteration `check` judges the iterate: the
    ridge stays unless it is degenerate (`check`) and the current ridge has run _BURN_IN iterations; then
    it moves to the next rung of RIDGE_LADDER above it (the last rung is final)."""

    def __init__(self, ridge: float, adaptive: bool):
        self.ridge = ridge
        self.adaptive = adaptive
        self.age = 0
        self.raised = False

    def check(self, norm_t: float, weights: np.ndarray, gram: np.ndarray, inner: np.ndarray,
              exact_inner: Callable[[], np.ndarray] | None = None, final: bool = False) -> bool:
        """Advance one iteration; True when the ridge was just raised (convergence tests restart).
        gram: the Hadamard product of all factor Grams; inner: b_r = <T, u_r>; when it is an estimate,
        exact_inner() must confirm a degeneracy first. Degenerate: the terms cancel (sum lambda^2 >
        _CANCELLATION ||X||^2) and the truncation profile rises somewhere or starts at >= 1. final: the
        fit is about to stop (converged), so the burn-in does not apply."""
        self.age += 1
        higher = [r for r in RIDGE_LADDER if r > self.ridge]
        if not self.adaptive or not higher or (self.age < _BURN_IN and not final):
            return False
        order = np.argsort(-weights, kind="stable")
        sorted_gram = gram[np.ix_(order, order)]

        def degenerate(b: np.ndarray) -> bool:
            errors = prefix_errors(norm_t, weights[order], sorted_gram, b[order])
            return not (errors[0] < 1.0 and np.all(np.diff(errors) <= _MONOTONE_SLACK))

        norm_x2 = float(weights @ gram @ weights)
        if float(weights @ weights) <= _CANCELLATION * norm_x2:
            return False  # the terms do not cancel: a rising profile is a transient of the iteration
        if not degenerate(inner) or (exact_inner is not None and not degenerate(exact_inner())):
            return False
        self.ridge, self.age, self.raised = higher[0], 0, True
        return True


def _debiased(t: np.ndarray, weights: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """weights * alpha, alpha = <T, X> / ||X||^2 >= 0: the least-squares scale of the whole model."""
    x = cp_reconstruct(weights, factors)
    norm_x2 = float(np.sum(x * x))
    alpha = float(np.sum(t * x)) / norm_x2 if norm_x2 > 0 else 1.0
    return weights * max(alpha, 0.0)


def _capped(rank: int, shape: Sequence[int]) -> int:
    return min(rank, cp_rank_cap(shape))


def _padded(weights: np.ndarray, factors: list[np.ndarray], rank: int, seed: int) -> tuple[np.ndarray, list]:
    """Append weight-0 terms (seeded unit columns) up to `rank` (past cp_rank_cap they add nothing)."""
    extra = rank - weights.size
    if extra <= 0:
        return weights, factors
    rng = np.random.default_rng([seed, 1])
    pads = [_normalized(rng.standard_normal((a.shape[0], extra)))[0] for a in factors]
    return np.append(weights, np.zeros(extra)), [np.hstack([a, p]) for a, p in zip(factors, pads)]


# ---------------------------------------------------------------------------------------------- ALS


def cp_als(
    tensor: np.ndarray,
    rank: int,
    *,
    init: Init = "hosvd",
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    ridge: float = 1e-9,
    adaptive_ridge: bool = True,
) -> CPResult:
    """Rank-`rank` CP of an N-way array (N >= 3) by exact ALS (module docstring for the equations).

    One iteration updates modes 0..N-1 in turn, each with the exact MTTKRP (O(|T| R)) and an R x R solve.
    The fit after an iteration is exact and cheap: ||T - X||^2 = ||T||^2 - 2 <T, X> + ||X||^2 with
    <T, X> = sum_ir (M_N * A_N)_ir lambda_r (the last mode's MTTKRP) and ||X||^2 = lambda^T (V_N * G_N) lambda.
    Stops when |fit_k - fit_{k-1}| <= tol * |fit_{k-1}| (both at the same ridge) or after max_iter iterations.
    ridge: the starting Tikhonov weight; adaptive_ridge raises it while the fit degenerates (module
    docstring; False: plain ALS at `ridge`). Ranks past cp_rank_cap(shape) come back as weight-0 terms.
    Raises CPInputError (a ValueError) on rank < 1, N < 3, an empty or non-finite tensor, bad options.
    """
    start = time.perf_counter()
    t = _check(tensor, rank, max_iter, tol, ridge)
    norm_t = float(np.linalg.norm(t))
    if norm_t == 0.0:
        return _zero_fit(t, rank, init, seed, "als", start)
    fit_rank = _capped(rank, t.shape)
    factors = initial_factors(t, fit_rank, _first_columns(init, fit_rank), seed)
    grams = [a.T @ a for a in factors]
    weights = np.ones(fit_rank)
    fits: list[float] = []
    guard = _Degeneracy(ridge, adaptive_ridge)
    same_ridge = False
    converged = False
    last = t.ndim - 1
    for _ in range(max_iter):
        for n in range(t.ndim):
            m = mttkrp(t, factors, n)
            v = _hadamard_grams(grams, n)
            factors[n], weights = _update(m, v, guard.ridge)
            grams[n] = factors[n].T @ factors[n]
        inner_r = np.einsum("ir,ir->r", m, factors[last])
        gram = v * grams[last]
        fits.append(1.0 - math.sqrt(max(norm_t**2 - 2 * float(inner_r @ weights) + float(weights @ gram @ weights),
                                        0.0)) / norm_t)
        settled = same_ridge and abs(fits[-1] - fits[-2]) <= tol * abs(fits[-2])
        same_ridge = not guard.check(norm_t, weights, gram, inner_r, final=settled)
        if settled and same_ridge:
            converged = True
            break
    if guard.raised:
        weights = _debiased(t, weights, factors)
    weights, factors = _sorted(weights, factors)
    weights, factors = _padded(weights, factors, rank, seed)
    return CPResult(weights, factors, fits, relative_error(t, weights, factors), len(fits),
                    time.perf_counter() - start, "als", converged, ridge=guard.ridge)


def _first_columns(init: Init, rank: int) -> Init:
    """A warm start cut to the fitted rank (its leading columns: `refit` passes them sorted by weight)."""
    if isinstance(init, str):
        return init
    return [np.asarray(a)[:, :rank] if np.ndim(a) == 2 else a for a in init]


# ---------------------------------------------------------------------------------------------- SPALS


def default_samples(rank: int, shape: Sequence[int], alpha: float) -> int:
    """m = ceil(alpha * R^2 * ln(n)), n = max(shape) (the paper's tensors are n x n x n; ln(max(n, 2)))."""
    return max(1, math.ceil(alpha * rank**2 * math.log(max(max(shape), 2))))


def _sampled_mttkrp(t: np.ndarray, factors: list[np.ndarray], probs: list[np.ndarray], mode: int,
                    samples: int, rng: np.random.Generator, weights: np.ndarray | None = None,
                    v: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Unbiased estimate of M_n = T_(n) KR_n from `samples` i.i.d. rows j = (i_k)_{k != n} of KR_n drawn
    with p_j = prod_k p_k[i_k]: M_n ~ sum_s T_(n)[:, j_s] KR_n[j_s, :] / (m p_{j_s}). Repeated rows are
    merged (weight count_j / (m p_j)). Returns the estimate and the number of distinct rows used."""
    others = [k for k in range(t.ndim) if k != mode]
    dims = tuple(t.shape[k] for k in others)
    draws = [rng.choice(t.shape[k], size=samples, p=probs[k]) for k in others]
    rows, counts = np.unique(np.ravel_multi_index(draws, dims), return_counts=True)
    idx = np.unravel_index(rows, dims)
    p = np.ones(rows.size)
    kr_rows = np.ones((rows.size, factors[0].shape[1]))
    for k, i_k in zip(others, idx):
        p *= probs[k][i_k]
        kr_rows *= factors[k][i_k]
    fibers = np.moveaxis(t, mode, -1)[idx]  # (rows, n_mode): T_(n)[:, j] for the drawn j
    weighted = kr_rows * (counts / (samples * p))[:, None]
    if weights is None:
        return fibers.T @ weighted, int(rows.size)
    model = factors[mode] * weights
    fibers = fibers - kr_rows @ model.T
    return model @ v + fibers.T @ weighted, int(rows.size)


def _probabilities(a: np.ndarray) -> np.ndarray:
    tau = leverage_scores(a)
    total = tau.sum()
    return tau / total if total > 0 else np.full(a.shape[0], 1.0 / a.shape[0])


class _FitSample:
    """A fixed uniform sample S of entries of T (all of T when |T| <= size), drawn once, so that fits of
    successive iterates are compared on the same entries: ||T - X||^2 ~ (|T| / |S|) sum_{e in S} (T_e - X_e)^2."""

    def __init__(self, t: np.ndarray, size: int, rng: np.random.Generator):
        flat = np.arange(t.size) if t.size <= size else np.sort(rng.choice(t.size, size=size, replace=False))
        self.index = np.unravel_index(flat, t.shape)
        self.values = t[self.index]
        self.scale = t.size / flat.size
        self.norm_t = float(np.linalg.norm(t))

    def fit(self, weights: np.ndarray, factors: list[np.ndarray]) -> float:
        x = np.ones((self.values.size, weights.size)) * weights
        for a, i_k in zip(factors, self.index):
            x *= a[i_k]
        resid2 = self.scale * float(np.sum((self.values - x.sum(axis=1)) ** 2))
        return 1.0 - math.sqrt(resid2) / self.norm_t


def cp_spals(
    tensor: np.ndarray,
    rank: int,
    *,
    samples: int | None = None,
    alpha: float = 3.0,
    init: Init = "hosvd",
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    ridge: float = 1e-9,
    adaptive_ridge: bool = True,
    patience: int = 10,
    fit_entries: int = 1 << 15,
    control_variate: bool = True,
) -> CPResult:
    """Rank-`rank` CP by SPALS: ALS whose MTTKRP M_n = T_(n) KR_n is estimated from sampled rows of KR_n.

    Sampling (Cheng, thesis Thm 3.3 / Alg. 1 without the T^2 term): row j = (i_k)_{k != n} of KR_n is drawn
    i.i.d. with p_j = prod_{k != n} tau^(k)_{i_k} / sum tau^(k), the product of the other factors' exact
    leverage scores (`leverage_scores`, recomputed after each factor update), an upper bound on the
    leverage of KR_n's rows up to normalization. Each draw is weighted 1 / (m p_j), so the estimate is
    unbiased; the update is A_n = M_n_hat (V_n + ridge I)^-1 with the exact Gram product V_n.

    control_variate (default True; False is Cheng's estimator as published): sample only the MTTKRP of
    the residual T - X, X = [[lambda; A]] the current model, whose own MTTKRP is exact and cheap,
    X_(n) KR_n = A_n diag(lambda) V_n:

        M_n_hat = A_n diag(lambda) V_n + sum_s w_s (T - X)_(n)[:, j_s] KR_n[j_s, :]

    Same draws, same weights, still unbiased, but its error scales with ||T - X|| instead of ||T||. Cheng's
    Thm 3.4 bound is additive, ||T - X_hat||^2 <= ||T - X_opt||^2 + eps ||T||^2: on a low-rank + 1% noise
    tensor (100^3, R = 5) plain SPALS stalls far above the noise (relative error 0.24 drawing 1% of the
    rows, 0.028 drawing 56%); with the control variate it reaches it (0.0106 at 1%) and, at the true rank
    of an exact tensor, converges to it exactly.

    Draws per mode update: `samples`, or by default m = ceil(alpha * R^2 * ln(n)) with n = the largest mode
    size (Thm 3.4: m = Theta(R^2 log n / eps^2), so alpha plays 1/eps^2). The thesis' experiments draw
    alpha * R^2 * ln(n)^2 (SPALS(1) at n = 1000, R = 10: ~4.77e3 rows): pass alpha * ln(n) for that.
    For N > 3 modes the leverage bound sums to prod_{k != n} rank(A_k) (up to R^(N-1)), not R^2, so
    small m may be noisy; rows repeated among the draws are merged, so the work per update is at most
    that of exact ALS.

    The fit of each iterate is estimated on a fixed seeded sample of `fit_entries` entries of T (exact when
    T has no more entries). SPALS iterates are random, so instead of ALS's rule it stops when the
    estimated fit has not beaten its best by more than tol * |best| for `patience` iterations in a row,
    and returns the iterate with the best estimated fit. relative_error is exact (one reconstruction).
    Sampling and start are seeded by `seed` (numpy Generator); `sampling` reports the draws.

    The adaptive ridge and the rank cap are ALS's (`cp_als`). The degeneracy test reads b_r = <T, u_r> off
    the last mode's sampled MTTKRP; an estimate's noise alone must not raise the ridge (it did, on a
    32x1x3x3 kernel at its exact rank 9: error 0.04 instead of 0), so a flagged iterate is confirmed with
    one exact MTTKRP (a diagnostic only: the updates stay sampled). A raised ridge restarts the search for
    the best iterate (a degenerate iterate's fit is often the best one seen, and must not come back).
    """
    start = time.perf_counter()
    t = _check(tensor, rank, max_iter, tol, ridge)
    if patience < 1 or fit_entries < 1 or alpha <= 0 or (samples is not None and samples < 1):
        raise CPInputError(f"need patience >= 1, fit_entries >= 1, alpha > 0, samples >= 1 "
                           f"(got {patience}, {fit_entries}, {alpha}, {samples})")
    if not np.any(t):
        return _zero_fit(t, rank, init, seed, "spals", start)
    fit_rank = _capped(rank, t.shape)
    m = int(samples) if samples is not None else default_samples(fit_rank, t.shape, alpha)
    rng = np.random.default_rng(seed)
    fit_sample = _FitSample(t, fit_entries, rng)
    factors = initial_factors(t, fit_rank, _first_columns(init, fit_rank), seed)
    grams = [a.T @ a for a in factors]
    probs = [_probabilities(a) for a in factors]
    weights = np.zeros(fit_rank)  # X = 0 until mode 0 is updated: the first estimate is plain SPALS
    distinct = np.zeros(t.ndim)
    fits: list[float] = []
    best: tuple[float, np.ndarray, list[np.ndarray]] | None = None
    stale = 0
    guard = _Degeneracy(ridge, adaptive_ridge)
    norm_t = float(np.linalg.norm(t))
    last = t.ndim - 1
    for _ in range(max_iter):
        for n in range(t.ndim):
            v = _hadamard_grams(grams, n)
            m_hat, used = _sampled_mttkrp(t, factors, probs, n, m, rng, weights if control_variate else None, v)
            distinct[n] += used
            factors[n], weights = _update(m_hat, v, guard.ridge)
            grams[n] = factors[n].T @ factors[n]
            probs[n] = _probabilities(factors[n])
        fits.append(fit_sample.fit(weights, factors))
        stale = 0 if best is None or fits[-1] > best[0] + tol * abs(best[0]) else stale + 1
        if best is None or fits[-1] > best[0]:
            best = (fits[-1], weights, list(factors))
        if stale >= patience:
            break
        estimate = np.einsum("ir,ir->r", m_hat, factors[last])
        exact = lambda: np.einsum("ir,ir->r", mttkrp(t, factors, last), factors[last])  # noqa: E731
        if guard.check(norm_t, weights, v * grams[last], estimate, exact):
            best, stale = None, 0
    weights, factors = (weights, factors) if best is None else (best[1], best[2])
    if guard.raised:
        weights = _debiased(t, weights, factors)
    weights, factors = _padded(*_sorted(weights, factors), rank, seed)
    rows = tuple(t.size // s for s in t.shape)
    stats = SamplingStats(m, rows, tuple(float(d) / len(fits) for d in distinct), int(fit_sample.values.size),
                          control_variate)
    return CPResult(weights, factors, fits, relative_error(t, weights, factors), len(fits),
                    time.perf_counter() - start, "spals", stale >= patience, stats, ridge=guard.ridge)


# ---------------------------------------------------------------------------------------------- refit


def refit(tensor: np.ndarray, result: CPResult, rank: int, **als_options) -> RefitResult:
    """Keep the `rank` largest-weight terms of `result` and run `cp_als` at that rank warm-started from
    them (CP terms are not nested, so the truncation is not the best rank-r fit). Each ALS mode update is
    a (ridge-regularized) least-squares optimum, so the error rarely rises above the start's; when it does
    (the ridge's shrinkage, or rounding), the truncation itself is returned, so after <= before."""
    t = _check(tensor, rank, als_options.get("max_iter", 100), als_options.get("tol", 0.0),
               als_options.get("ridge", 0.0))
    if rank > result.rank:
        raise CPInputError(f"refit rank {rank} exceeds the fit's rank {result.rank}")
    if result.shape != t.shape:
        raise CPInputError(f"the fit is of a {result.shape} tensor, not {t.shape}")
    weights, factors = _sorted(result.weights, result.factors)
    kept_w, kept = weights[:rank], [a[:, :rank] for a in factors]
    before = relative_error(t, kept_w, kept)
    new = cp_als(t, rank, init=kept, **als_options)  # lambda is not needed: mode 0 is solved first
    if new.relative_error > before:
        new = CPResult(kept_w, kept, [1.0 - before], before, 0, new.seconds, "truncated", True)
    return RefitResult(before, new.relative_error, new)
