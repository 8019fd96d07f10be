"""Tucker-2 factorization of a conv kernel and its per-layer choice set (pure numpy, no torch).

A kernel W of shape [f, c, kh, kw] is factored along its output (mode 0) and input (mode 1) modes
only (Kim et al., "Compression of deep convolutional neural networks for fast and low power mobile
applications", ICLR 2016):

    W ~= G x_0 U_f x_1 U_c,   W_hat[o, i, y, x] = sum_{a<r2, b<r1} U_f[o, a] G[a, b, y, x] U_c[i, b]

with U_f (f x r2) and U_c (c x r1) column-orthonormal and core G = W x_0 U_f^T x_1 U_c^T of shape
[r2, r1, kh, kw]. As layers: 1x1 conv (c -> r1, weight U_c^T), kh x kw conv (r1 -> r2, weight G, the
original stride/padding/dilation), 1x1 conv (r2 -> f, weight U_f, the original bias).

Since W_hat is the orthogonal projection of W onto span(U_f) (x) span(U_c) in modes 0 and 1,

    ||W - W_hat||_F^2 = ||W||_F^2 - ||G||_F^2.                                        (1)

HOSVD takes U_f, U_c as the leading left singular vectors of the mode-0 / mode-1 unfoldings of W;
HOOI then alternates the two exact partial maximizations of ||G||_F (each factor is the leading
left singular subspace of W projected by the other), so its error never increases.

Errors of all (r1, r2) pairs: with the full HOSVD bases (every left singular vector of each unfolding)
fixed, the projection onto the leading r2 / r1 vectors keeps exactly the block G_full[:r2, :r1] of the
full core G_full = W x_0 U_f^T x_1 U_c^T, so by (1)

    E(r1, r2) = ||W||_F^2 - sum_{a<r2, b<r1} e[a, b],    e[a, b] = ||G_full[a, b, :, :]||_F^2,   (2)

a 2-D cumulative sum (`pair_errors`). This is exact for HOSVD truncation at every pair and an upper
bound on the (HOOI) optimum. The error is NOT a function of the two mode spectra alone, as it is
for one matrix: the spectra only give the bound sum_{a>=r2} s0_a^2 + sum_{b>=r1} s1_b^2 (De Lathauwer
et al. 2000), because the two truncations overlap in the corner e[r2:, r1:].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

IntPair = int | Sequence[int]
_ROUNDOFF = 1e-13  # relative energy below which a core entry of pair_errors is roundoff


@dataclass(frozen=True)
class Tucker2Result:
    """A fitted Tucker-2 factorization W ~= core x_0 U_out x_1 U_in.

    core: [r2, r1, kh, kw]; U_out: [f, r2]; U_in: [c, r1] (orthonormal columns).
    rel_error: ||W - W_hat||_F / ||W||_F (0 for a zero kernel), measured on the reconstruction.
    iterations: HOOI sweeps run (0 for HOSVD); history: the relative error after each sweep, from (1),
    history[0] being the initialization's.
    """

    core: np.ndarray
    U_out: np.ndarray
    U_in: np.ndarray
    rel_error: float
    iterations: int
    history: tuple[float, ...] = field(default=())
    method: str = "hosvd"

    @property
    def r1(self) -> int:
        return int(self.U_in.shape[1])

    @property
    def r2(self) -> int:
        return int(self.U_out.shape[1])

    def reconstruct(self) -> np.ndarray:
        """W_hat = core x_0 U_out x_1 U_in, shape [f, c, kh, kw]."""
        return _reconstruct(self.core, self.U_out, self.U_in)


# ---- numerical core ----------------------------------------------------------------------------

def _as_kernel(kernel) -> np.ndarray:
    w = np.asarray(kernel, dtype=np.float64)
    if w.ndim != 4 or 0 in w.shape:
        raise ValueError(f"expected a non-empty 4-way kernel [f, c, kh, kw], got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("kernel has NaN or infinite values")
    return w


def _check_ranks(w: np.ndarray, r1: int, r2: int) -> None:
    f, c = w.shape[:2]
    if not (1 <= r1 <= c and 1 <= r2 <= f):
        raise ValueError(f"ranks need 1 <= r1 <= c={c} and 1 <= r2 <= f={f}, got r1={r1}, r2={r2}")


def _unfold(w: np.ndarray, mode: int) -> np.ndarray:
    """Mode-0 ([f, c*kh*kw]) or mode-1 ([c, f*kh*kw]) unfolding."""
    return np.moveaxis(w, mode, 0).reshape(w.shape[mode], -1)


def _mode_basis(matrix: np.ndarray) -> np.ndarray:
    """Left singular vectors of `matrix` (rows x n), as a complete orthonormal basis of R^rows, in
    order of decreasing singular value: eigenvectors of the Gram matrix M M^T (several times faster
    than an SVD of the wide unfoldings; only the trailing, near-null directions lose digits)."""
    _, vecs = np.linalg.eigh(matrix @ matrix.T)
    return np.ascontiguousarray(vecs[:, ::-1])


def _leading(matrix: np.ndarray, r: int) -> np.ndarray:
    """r leading left singular vectors (orthonormal; completed past the matrix's rank when r > min(shape))."""
    return np.ascontiguousarray(_mode_basis(matrix)[:, :r])


def _project(w: np.ndarray, U_out: np.ndarray, U_in: np.ndarray) -> np.ndarray:
    """w x_0 U_out^T x_1 U_in^T: [f, c, kh, kw] -> [r2, r1, kh, kw] (two matrix products)."""
    f, c, kh, kw = w.shape
    t = (U_out.T @ w.reshape(f, -1)).reshape(-1, c, kh * kw)  # [r2, c, k]
    g = np.swapaxes(t, 1, 2) @ U_in  # [r2, k, r1]
    return np.ascontiguousarray(np.swapaxes(g, 1, 2)).reshape(U_out.shape[1], U_in.shape[1], kh, kw)


def _reconstruct(core: np.ndarray, U_out: np.ndarray, U_in: np.ndarray) -> np.ndarray:
    """core x_0 U_out x_1 U_in: [r2, r1, kh, kw] -> [f, c, kh, kw]."""
    return np.einsum("ab,bcyx,dc->adyx", U_out, core, U_in, optimize=True)


def _rel_error(w: np.ndarray, U_out: np.ndarray, U_in: np.ndarray, norm: float) -> float:
    """||W - W_hat||_F / ||W||_F measured on the reconstruction (equation (1) would lose digits)."""
    if norm == 0:
        return 0.0
    return float(np.linalg.norm(w - _reconstruct(_project(w, U_out, U_in), U_out, U_in))) / norm


def _result(w: np.ndarray, U_out: np.ndarray, U_in: np.ndarray, iterations: int, history: list[float],
            method: str) -> Tucker2Result:
    return Tucker2Result(_project(w, U_out, U_in), U_out, U_in, history[-1], iterations, tuple(history), method)


def tucker2_hosvd(kernel, r1: int, r2: int) -> Tucker2Result:
    """Truncated HOSVD in modes 0 and 1.

    U_f = leading r2 left singular vectors of W_(0) (f x c*kh*kw), U_c = leading r1 left singular
    vectors of W_(1) (c x f*kh*kw), core = W x_0 U_f^T x_1 U_c^T. Its squared error is exactly
    `pair_errors(W, [r1], [r2])` (equation (2)).
    """
    w = _as_kernel(kernel)
    _check_ranks(w, r1, r2)
    U_out, U_in = _leading(_unfold(w, 0), r2), _leading(_unfold(w, 1), r1)
    return _result(w, U_out, U_in, 0, [_rel_error(w, U_out, U_in, float(np.linalg.norm(w)))], "hosvd")


def tucker2_hooi(kernel, r1: int, r2: int, *, max_iter: int = 50, tol: float = 1e-7,
                 init: Literal["hosvd", "random"] = "hosvd", seed: int = 0) -> Tucker2Result:
    """Higher-order orthogonal iteration (De Lathauwer et al. 2000) in modes 0 and 1.

    One sweep:  U_f <- leading r2 left singular vectors of (W x_1 U_c^T)_(0),
                U_c <- leading r1 left singular vectors of (W x_0 U_f^T)_(1).
    Each update maximizes ||G||_F = ||W x_0 U_f^T x_1 U_c^T||_F over one factor with the other fixed,
    so by (1) the error is non-increasing from the initialization (HOSVD, or random orthonormal
    factors with `seed`). Stops when a sweep lowers the relative error by <= tol, or after max_iter.
    """
    w = _as_kernel(kernel)
    _check_ranks(w, r1, r2)
    if max_iter < 0 or tol < 0:
        raise ValueError("max_iter and tol must be non-negative")
    if init == "hosvd":
        U_out, U_in = _leading(_unfold(w, 0), r2), _leading(_unfold(w, 1), r1)
    elif init == "random":
        rng = np.random.default_rng(seed)
        U_out = np.linalg.qr(rng.standard_normal((w.shape[0], r2)))[0]
        U_in = np.linalg.qr(rng.standard_normal((w.shape[1], r1)))[0]
    else:
        raise ValueError(f"init must be 'hosvd' or 'random', got {init!r}")
    norm = float(np.linalg.norm(w))
    history = [_rel_error(w, U_out, U_in, norm)]
    iterations = 0
    f, c, kh, kw = w.shape
    w3 = w.reshape(f, c, kh * kw)
    for iterations in range(1, max_iter + 1):
        # (W x_1 U_c^T)_(0): [f, kh*kw*r1] (the column order does not change the left singular vectors)
        U_out = _leading((np.swapaxes(w3, 1, 2) @ U_in).reshape(f, -1), r2)
        # (W x_0 U_f^T)_(1): [c, r2*kh*kw]
        U_in = _leading(np.swapaxes((U_out.T @ w.reshape(f, -1)).reshape(r2, c, -1), 0, 1).reshape(c, -1), r1)
        history.append(_rel_error(w, U_out, U_in, norm))
        if history[-2] - history[-1] <= tol:
            break
    return _result(w, U_out, U_in, iterations, history, "hooi")


def pair_errors(kernel, r1_grid, r2_grid) -> np.ndarray:
    """Squared HOSVD projection errors ||W - W x_0 P_f(r2) x_1 P_c(r1)||_F^2 for every grid pair.

    P_f(r2) / P_c(r1) project onto the leading r2 / r1 left singular vectors of W_(0) / W_(1) (ranks
    past an unfolding's rank keep everything). Returns an array [len(r1_grid), len(r2_grid)], entry
    [a, b] for (r1_grid[a], r2_grid[b]). Cost: the full bases (eigenvectors of the unfoldings' Gram
matrices) and two matrix products for the full core,
    then equation (2) for all pairs at once, written as sums of non-negative tails to avoid
    cancellation: with A[a] = sum_{a'>=a} e[a', :], B[b] = sum_{b'>=b} e[:, b'] and
    T[a, b] = sum_{a'>=a, b'>=b} e[a', b'],   E(r1, r2) = A[r2] + B[r1] - T[r2, r1].
    Entries e[a, b] below 1e-13 ||W||_F^2 count as 0 (roundoff of directions W does not span).
    """
    w = _as_kernel(kernel)
    f, c = w.shape[:2]
    r1s, r2s = np.asarray(r1_grid, dtype=np.int64).reshape(-1), np.asarray(r2_grid, dtype=np.int64).reshape(-1)
    if r1s.size and (r1s.min() < 1 or r1s.max() > c) or r2s.size and (r2s.min() < 1 or r2s.max() > f):
        raise ValueError(f"grid ranks need 1 <= r1 <= c={c} and 1 <= r2 <= f={f}")
    w0, w1 = _unfold(w, 0), _unfold(w, 1)
    rank0, rank1 = min(w0.shape), min(w1.shape)  # directions past these carry nothing of W
    e = np.sum(_project(w, _mode_basis(w0)[:, :rank0], _mode_basis(w1)[:, :rank1]) ** 2, axis=(2, 3))
    # Energies in directions W does not span come out as roundoff; zeroing them makes a rank-deficient
    # mode's extra ranks lose exactly nothing, so those pairs tie (and are pruned as dominated).
    e[e < _ROUNDOFF * float(e.sum())] = 0.0
    tail = np.zeros((e.shape[0] + 1, e.shape[1] + 1))
    tail[:-1, :-1] = np.cumsum(np.cumsum(e[::-1, ::-1], axis=0), axis=1)[::-1, ::-1]
    a = np.minimum(r2s, e.shape[0])[None, :]  # ranks past an unfolding's rank lose nothing more
    b = np.minimum(r1s, e.shape[1])[:, None]
    err = tail[a, 0] + tail[0, b] - tail[a, b]
    return np.maximum(err, 0.0)


# ---- costs -------------------------------------------------------------------------------------

def _pair(value: IntPair) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def conv_output_size(h_in: int, w_in: int, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0,
                     dilation: IntPair = 1) -> tuple[int, int]:
    """(H_out, W_out) = floor((H + 2 p - d (k - 1) - 1) / s) + 1 per axis (PyTorch's Conv2d)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h_out = (h_in + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w_in + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"a {kh}x{kw} conv gives no output on a {h_in}x{w_in} input")
    return h_out, w_out


def tucker2_costs(f: int, c: int, kh: int, kw: int, h_in: int, w_in: int, stride: IntPair, padding: IntPair,
                  dilation: IntPair, r1, r2, *, bias: bool = False):
    """(MACs per sample, parameters) of the Tucker-2 layer; r1, r2 may be broadcastable int arrays.

    MACs   = c r1 H W  +  r1 r2 kh kw H_out W_out  +  r2 f H_out W_out
             (first 1x1 at the input resolution, core and last 1x1 at the output resolution)
    params = c r1 + r1 r2 kh kw + r2 f  (+ f with bias)
    """
    h_out, w_out = conv_output_size(h_in, w_in, kh, kw, stride, padding, dilation)
    r1, r2 = np.asarray(r1, dtype=np.int64), np.asarray(r2, dtype=np.int64)
    macs = c * r1 * h_in * w_in + (r1 * r2 * kh * kw + r2 * f) * h_out * w_out
    params = c * r1 + r1 * r2 * kh * kw + r2 * f + (f if bias else 0)
    if macs.ndim == 0:
        return int(macs), int(params)
    return macs, params


def dense_costs(f: int, c: int, kh: int, kw: int, h_in: int, w_in: int, stride: IntPair, padding: IntPair,
                dilation: IntPair, *, bias: bool = False) -> tuple[int, int]:
    """(MACs, parameters) of the unfactored conv: f c kh kw H_out W_out and f c kh kw (+ f)."""
    h_out, w_out = conv_output_size(h_in, w_in, kh, kw, stride, padding, dilation)
    return f * c * kh * kw * h_out * w_out, f * c * kh * kw + (f if bias else 0)


# ---- the layer's choices -------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """One candidate for a layer: Tucker-2 ranks (r1, r2), or the dense layer (dense=True, r1=c, r2=f).

    error: squared Frobenius error of the HOSVD truncation, equation (2) (HOOI's is no larger); 0 dense.
    """

    r1: int
    r2: int
    macs: int
    params: int
    error: float
    dense: bool = False


def rank_grid(full: int, multiple: int = 1) -> np.ndarray:
    """multiple, 2 multiple, ... <= full, plus full itself."""
    if full < 1 or multiple < 1:
        raise ValueError(f"need full >= 1 and multiple >= 1, got {full}, {multiple}")
    return np.unique(np.append(np.arange(multiple, full + 1, multiple, dtype=np.int64), full))


def _front_2d(cost: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in (cost, err), in order of increasing cost."""
    order = np.lexsort((err, cost))
    e = err[order]
    return order[np.concatenate([[True], e[1:] < np.minimum.accumulate(e)[:-1]])]


def _pareto_grid(macs: np.ndarray, params: np.ndarray, err: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Mask of the grid points (alive on entry) that no other grid point dominates.

    Relies on the grid's monotonicity: macs and params strictly increase along both axes and err does
    not increase. For a point p and a row i', the only candidate dominator worth testing in that row is
    the first column whose error is <= err[p]: every later column costs more in both rows. Rows that
    hold many points of the 2-D (macs, err) and (params, err) frontiers dominate the most, so they go
    first and the set of points still to test shrinks fast.
    """
    n1, n2 = err.shape
    neg = -err  # rows non-decreasing, for searchsorted
    flat_err = err.reshape(-1)
    fronts = np.concatenate([_front_2d(macs.reshape(-1), flat_err), _front_2d(params.reshape(-1), flat_err)])
    rows = np.argsort(-np.bincount(fronts // n2, minlength=n1), kind="stable")
    idx = np.flatnonzero(alive.reshape(-1))
    pi, pe, pm, pp = idx // n2, flat_err[idx], macs.reshape(-1)[idx], params.reshape(-1)[idx]
    for row in rows:
        if idx.size == 0:
            break
        qj = np.searchsorted(neg[row], -pe, side="left")
        found = qj < n2
        qj[~found] = n2 - 1
        qm, qp, qe = macs[row, qj], params[row, qj], err[row, qj]
        strict = (qm < pm) | (qp < pp) | (qe < pe) | (row < pi)  # identical triples: smallest r1 stays
        survive = ~(found & (qm <= pm) & (qp <= pp) & (qe <= pe) & strict)
        if not survive.all():
            idx, pi, pe, pm, pp = idx[survive], pi[survive], pe[survive], pm[survive], pp[survive]
    keep = np.zeros(n1 * n2, dtype=bool)
    keep[idx] = True
    return keep.reshape(n1, n2)


def _thin(macs: np.ndarray, params: np.ndarray, err: np.ndarray, max_count: int) -> np.ndarray:
    """Indices of at most max_count of the given (frontier) points, in order of increasing MACs: the
    points of the 2-D (macs, error) and (params, error) frontiers first, then the others, each
    evenly spaced in MACs order when they do not all fit. The cheapest point is always kept."""
    by_macs = np.lexsort((params, macs))
    on_2d = np.zeros(macs.size, dtype=bool)
    on_2d[_front_2d(macs, err)] = True
    on_2d[_front_2d(params, err)] = True
    chosen: list[np.ndarray] = []
    room = max_count
    for pool in (by_macs[on_2d[by_macs]], by_macs[~on_2d[by_macs]]):
        if room <= 0 or pool.size == 0:
            continue
        if pool.size > room:
            pool = pool[np.unique(np.linspace(0, pool.size - 1, room).round().astype(np.int64))]
        chosen.append(pool)
        room -= pool.size
    picked = np.concatenate(chosen)
    return picked[np.lexsort((params[picked], macs[picked]))]


def pareto_choices(kernel, h_in: int, w_in: int, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                   *, multiple: int = 1, max_choices: int | None = 1024, bias: bool = False) -> list[Choice]:
    """The layer's knapsack candidates: the dense layer plus the undominated Tucker-2 rank pairs.

    Pairs: r1 in rank_grid(c, multiple), r2 in rank_grid(f, multiple), with `tucker2_costs` and the
    exact HOSVD errors of `pair_errors`. Dominance: a dominates b when macs_a <= macs_b,
    params_a <= params_b and error_a <= error_b with at least one strict; of candidates with identical
    (macs, params, error) the one with the smallest r1 is kept. The dense layer (error 0, the original
    costs) is always listed, and every pair it dominates (no cheaper in either cost) is dropped.
    If more than max_choices pairs survive (None: no limit), the 2-D frontiers of (macs, error) and
    (params, error) are kept first and the rest evenly spaced in MACs (the knapsack over the thinned
    set is then an approximation). Order: by MACs; the dense choice last.
    """
    w = _as_kernel(kernel)
    f, c, kh, kw = w.shape
    if max_choices is not None and max_choices < 1:
        raise ValueError(f"max_choices must be >= 1, got {max_choices}")
    r1s, r2s = rank_grid(c, multiple), rank_grid(f, multiple)
    dense_macs, dense_params = dense_costs(f, c, kh, kw, h_in, w_in, stride, padding, dilation, bias=bias)
    macs, params = tucker2_costs(f, c, kh, kw, h_in, w_in, stride, padding, dilation, r1s[:, None], r2s[None, :],
                                 bias=bias)
    err = pair_errors(w, r1s, r2s)
    # Roundoff can break monotonicity by an ulp; the pruning needs it (both cummins keep it exact).
    err = np.minimum.accumulate(np.minimum.accumulate(err, axis=0), axis=1)
    alive = (macs < dense_macs) | (params < dense_params)
    keep = _pareto_grid(macs.astype(np.float64), params.astype(np.float64), err, alive)
    ii, jj = np.nonzero(keep)
    m, p, e = macs[ii, jj], params[ii, jj], err[ii, jj]
    if max_choices is not None and ii.size > max_choices:
        sel = _thin(m.astype(np.float64), p.astype(np.float64), e, max_choices)
    else:
        sel = np.lexsort((p, m))
    choices = [Choice(int(r1s[ii[k]]), int(r2s[jj[k]]), int(m[k]), int(p[k]), float(e[k])) for k in sel]
    choices.append(Choice(c, f, int(dense_macs), int(dense_params), 0.0, dense=True))
    return choices


def knapsack_arrays(choices: Sequence[Choice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(errors, macs, params) of one layer's choices: one group of `edgecomp.ranks.knapsack`'s input."""
    return (np.array([ch.error for ch in choices], dtype=np.float64),
            np.array([ch.macs for ch in choices], dtype=np.float64),
            np.array([ch.params for ch in choices], dtype=np.float64))
