"""Exact Euclidean projection onto the feasible set of COBLA's relaxed problem (eq. 8).

The free masks x live in

    P = { x : 0 <= x <= 1,  A x <= b }

with one row per budget: a_C . x <= b_C (compute), a_M . x <= b_M (parameters), and one more for every
extra budget of the problem (e.g. latency; RankProblem.extra). A >= 0 holds per-mask cost coefficients,
b the budgets left after the constant cost terms and the masks fixed to 1. The projection of z solves
min_x 1/2 ||x - z||^2, x in P. `LinearPolytope` takes any number k of rows; `BudgetPolytope` is its
two-row special case (positive rows) with a closed-form Newton step and the exact two-row case analysis
below as fallback; `polytope(A, b)` picks BudgetPolytope for two positive rows. Both give the same point
(tests/test_k_constraints.py).

The two-row method, described for BudgetPolytope; LinearPolytope is the same with k multipliers:

Method: dualise the two budget rows and keep the box. For multipliers mu = (mu_C, mu_M) >= 0
the Lagrangian is minimised over the box by

    x(mu) = clip(z - mu_C a_C - mu_M a_M, 0, 1),

and the dual function D(mu) = 1/2 ||x(mu) - z||^2 + mu . (A x(mu) - b) is concave, C^1 and
piecewise quadratic, with gradient r(mu) = A x(mu) - b and generalised Hessian -A_F A_F^T (F:
masks strictly inside the box). x(mu) is the projection iff mu >= 0, r <= 0 and mu_k r_k = 0.

1. mu = 0 when clip(z, 0, 1) already satisfies both rows.
2. Projected semismooth Newton on the 2 x 2 dual, warm-started from the previous call's
   multipliers (consecutive projections inside one QP solve differ little, so this usually
   takes one to three O(n) passes; on a linear piece of x(mu) one full step is exact). The
   2 x 2 system is solved with a pseudo-inverse because a_C and a_M are parallel within a layer
   (with one layer they are parallel everywhere and mu is not unique; any solution will do).
   Steps are accepted on projected-Armijo ascent of D, or, where the change of D is below its
   rounding error, on a decrease of the KKT residual.
3. If Newton stalls, an exact case analysis takes over: only row C active, only row M active,
   or both. A single active row is a monotone piecewise-linear equation in one multiplier. With
   both active, phi(mu_C) = max_{mu_M >= 0} D(mu_C, mu_M) is concave with derivative
   r_C(mu_C, mu_M*(mu_C)) (Danskin), non-increasing, so mu_C is again a monotone 1-D root,
   each evaluation solving the inner 1-D root for mu_M. All 1-D roots use Newton steps with
   the exact one-sided slope (-sum_F a^2, or its Schur complement on the outer level) inside
   a shrinking bracket with bisection safeguards, so they terminate for every input.

k rows (LinearPolytope): steps 1-2 as above on the k x k dual (the Newton step is the pseudo-inverse
of the k x k generalised Hessian on the working rows, by eigen-decomposition with the rows scaled to unit
norm, since MACs and ms differ by orders of magnitude: duplicate rows and rows parallel on F make it
singular). Fallback: an exact nested case analysis. For the rows (1, ..., k),
phi(mu_1) = max_{mu_2..k >= 0} D(mu) is concave with derivative r_1 at the inner maximiser (Danskin; x
is unique, being the projection of z - mu_1 a_1 onto the polytope of rows 2..k), so mu_1 is a monotone
1-D root whose every evaluation is the same problem with one row fewer (recursively, down to the 1-row
root). The outer Newton slopes are the Schur complements of the free Hessian over the inner rows with
positive multipliers. Zero rows are allowed (their multiplier stays 0).

Tolerance: row k counts as met within 1e-12 * (||a_k||_1 + |b_k| + 1).
"""

from __future__ import annotations

import numpy as np

_RTOL = 1e-12
_NEWTON_ITERS = 25


class LinearPolytope:
    """P = {x : 0 <= x <= 1, A x <= b} for k rows A >= 0; `project` is the exact Euclidean projection."""

    def __init__(self, A: np.ndarray, b: np.ndarray):
        A = np.asarray(A, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if A.ndim != 2 or A.shape[0] != b.size:
            raise ValueError(f"need one budget per row: A has shape {A.shape}, b has {b.size} entries")
        if not np.all(np.isfinite(A)):
            raise ValueError("cost coefficients must be finite")
        if np.any(A < 0):
            raise ValueError("cost coefficients must be non-negative")
        if not np.all(np.isfinite(b)):
            raise ValueError("budgets must be finite")
        self.A = np.ascontiguousarray(A)
        self.k, self.n = A.shape
        self._pairs = np.triu_indices(self.k)
        self._AA = np.ascontiguousarray(A[self._pairs[0]] * A[self._pairs[1]])  # for A_F A_F^T
        self.b = b.copy()
        self.tol = _RTOL * (self.A.sum(axis=1) + np.abs(self.b) + 1.0)
        self.mu = np.zeros(self.k)  # multipliers of the last projection (warm start)
        self.fallbacks = 0  # how often the exact case analysis was needed (diagnostics)
        self._rest: LinearPolytope | None = None  # rows 2..k, for the nested case analysis
        norms = np.linalg.norm(self.A, axis=1)
        self._scale = np.where(norms > 0.0, 1.0 / np.where(norms > 0.0, norms, 1.0), 1.0)  # rows of unit norm

    # ---- feasibility -------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        """P is empty iff its smallest point x = 0 violates a row, i.e. b_k < 0."""
        return bool(np.any(self.b < -self.tol))

    def row_values(self, x: np.ndarray) -> np.ndarray:
        """A x: every row's value."""
        return self.A @ x

    def contains(self, x: np.ndarray, rtol: float = 1e-9) -> bool:
        """x in P up to rtol (box) and rtol * (||a_k||_1 + |b_k|) (rows)."""
        if x.size and (x.min() < -rtol or x.max() > 1.0 + rtol):
            return False
        scale = self.A.sum(axis=1) + np.abs(self.b) + 1.0
        return bool(np.all(self.A @ x - self.b <= rtol * scale))

    # ---- projection --------------------------------------------------------------------
    def project(self, z: np.ndarray) -> np.ndarray:
        """argmin_{x in P} ||x - z||_2; the multipliers are left in `self.mu`."""
        z = np.asarray(z, dtype=np.float64)
        if self.n == 0:
            return z.copy()
        if self.is_empty:
            raise ValueError("cannot project onto an empty polytope (a budget is negative)")
        x = np.clip(z, 0.0, 1.0)
        if np.all(self.A @ x - self.b <= self.tol):
            self.mu = np.zeros(self.k)
            return x
        mu = self._newton(z, np.maximum(self.mu, 0.0))
        if mu is None:
            self.fallbacks += 1
            mu = self._fallback(z)
        self.mu = mu
        return np.clip(z - mu @ self.A, 0.0, 1.0)

    def _violation(self, mu: np.ndarray, r: np.ndarray) -> float:
        """KKT residual of the dual in units of the row tolerance (<= 1 means solved)."""
        v = np.where(mu > 0.0, np.abs(r), np.maximum(r, 0.0)) / self.tol
        return float(v.max())

    def _state(self, z, mu):
        y = z - mu @ self.A
        x = np.clip(y, 0.0, 1.0)
        r = self.A @ x - self.b
        dx = x - z
        return y, r, 0.5 * float(dx @ dx) + float(mu @ r)

    def _step(self, free: np.ndarray, r: np.ndarray, work: np.ndarray) -> np.ndarray:
        """pinv(H_WW) r_W, H = A_F A_F^T (F: `free`), W: the working rows, computed with the rows scaled to
        unit norm (costs in MACs and in ms differ by many orders of magnitude); eigenvalues below 1e-13 of the
        largest count as zero (duplicate or parallel rows)."""
        H = np.zeros((self.k, self.k))
        H[self._pairs] = self._AA @ free
        H[self._pairs[::-1]] = H[self._pairs]
        step = np.zeros(self.k)
        idx = np.flatnonzero(work)
        if idx.size == 0:
            return step
        d = self._scale[idx]
        w, V = np.linalg.eigh(H[np.ix_(idx, idx)] * d[:, None] * d[None, :])
        top = float(w.max())
        if top <= 0.0:
            return step
        keep = w > 1e-13 * top
        V = V[:, keep]
        step[idx] = d * (V @ ((V.T @ (d * r[idx])) / w[keep]))
        return step

    def _newton(self, z: np.ndarray, mu: np.ndarray) -> np.ndarray | None:
        """Projected semismooth Newton ascent on D(mu); None if it stalls."""
        y, r, dual = self._state(z, mu)
        viol = self._violation(mu, r)
        for _ in range(_NEWTON_ITERS):
            if viol <= 1.0:
                return mu
            free = ((y > 0.0) & (y < 1.0)).astype(np.float64)
            # multipliers held at zero: at the bound with the dual gradient pointing outward
            work = ~((mu <= 0.0) & (r < 0.0))
            step = self._step(free, r, work)
            if not np.any(step):
                return None
            alpha, accepted = 1.0, False
            noise = 1e-13 * (abs(dual) + 1.0)
            for _ls in range(30):
                trial = np.maximum(mu + alpha * step, 0.0)
                ty, tr, tdual = self._state(z, trial)
                gain = tdual - dual
                tviol = self._violation(trial, tr)
                if gain >= 1e-4 * float(r @ (trial - mu)) or (gain >= -noise and tviol < viol):
                    accepted = True
                    break
                alpha *= 0.5
            if not accepted or np.array_equal(trial, mu):
                return None
            mu, y, r, dual, viol = trial, ty, tr, tdual, tviol
        return mu if viol <= 1.0 else None

    # ---- exact case analysis (fallback) ------------------------------------------------
    def _row_root(self, y: np.ndarray, k: int) -> float:
        """Smallest t >= 0 with a_k . clip(y - t a_k, 0, 1) <= b_k (within the row tolerance)."""
        a, b, tol = self.A[k], self.b[k], self.tol[k]

        def f(t):
            u = y - t * a
            x = np.clip(u, 0.0, 1.0)
            right_free = (u > 0.0) & (u <= 1.0)  # free just to the right of t
            return float(a @ x) - b, -float(a[right_free] @ a[right_free])

        f0, s0 = f(0.0)
        if f0 <= tol:
            return 0.0
        hi = _clip_all(y, a)
        return _monotone_root(f, 0.0, f0, s0, hi, f(hi)[0], tol)

    def _fallback(self, z: np.ndarray) -> np.ndarray:
        return self._nested(z)

    def _nested(self, y: np.ndarray) -> np.ndarray:
        """Multipliers projecting y onto P by the exact nested case analysis (module docstring): a monotone
        1-D root in mu_1, each evaluation projecting y - mu_1 a_1 onto the polytope of rows 2..k (its own
        Newton, warm-started, with this fallback one level down)."""
        if self.k == 1:
            return np.array([self._row_root(y, 0)])
        if self._rest is None:
            self._rest = polytope(self.A[1:], self.b[1:])
        rest, A, a = self._rest, self.A, self.A[0]

        def inner(t: float):
            yt = y - t * a
            rest.project(yt)
            mu_rest = rest.mu.copy()
            u = yt - mu_rest @ A[1:]
            free = (u > 0.0) & (u <= 1.0)
            a_f = a[free]
            h11 = float(a_f @ a_f)
            slope = -h11
            active = np.flatnonzero(mu_rest > 0.0) + 1
            if active.size:  # Schur complement of the free Hessian over the inner active rows (unit-norm rows)
                A_s = A[active][:, free] * self._scale[active][:, None]
                h = A_s @ a_f
                slope = -max(h11 - float(h @ np.linalg.pinv(A_s @ A_s.T, rcond=1e-13, hermitian=True) @ h), 0.0)
            return float(a @ np.clip(u, 0.0, 1.0)) - self.b[0], slope, mu_rest

        f0, s0, mu0 = inner(0.0)
        if f0 <= self.tol[0]:
            return np.concatenate([[0.0], mu0])
        hi = _clip_all(y, a)
        t = _monotone_root(lambda t: inner(t)[:2], 0.0, f0, s0, hi, inner(hi)[0], self.tol[0])
        return np.concatenate([[t], inner(t)[2]])


class BudgetPolytope(LinearPolytope):
    """The two-row set P (compute and parameter rows, both positive): closed-form Newton steps and the
    exact two-row case analysis of the module docstring as fallback."""

    def __init__(self, a_c: np.ndarray, a_m: np.ndarray, b_c: float, b_m: float):
        a_c = np.asarray(a_c, dtype=np.float64).reshape(-1)
        a_m = np.asarray(a_m, dtype=np.float64).reshape(-1)
        if a_c.shape != a_m.shape:
            raise ValueError(f"cost rows differ in length: {a_c.size} vs {a_m.size}")
        if not (np.all(np.isfinite(a_c)) and np.all(np.isfinite(a_m))):
            raise ValueError("cost coefficients must be finite")
        if np.any(a_c <= 0) or np.any(a_m <= 0):
            raise ValueError("cost coefficients must be positive")
        if not (np.isfinite(b_c) and np.isfinite(b_m)):
            raise ValueError("budgets must be finite")
        super().__init__(np.vstack([a_c, a_m]), np.array([float(b_c), float(b_m)]))

    def _step(self, free: np.ndarray, r: np.ndarray, work: np.ndarray) -> np.ndarray:
        h11, h12, h22 = self._AA @ free  # A_F A_F^T
        return _newton_step(h11, h12, h22, r, work)

    def _fallback(self, z: np.ndarray) -> np.ndarray:
        return self._cases(z)

    def _both_active(self, z: np.ndarray, mu_c: float):
        """Inner solution mu_M*(mu_C) and phi'(mu_C) = r_C with its (Schur-complement) slope."""
        A = self.A
        y = z - mu_c * A[0]
        mu_m = self._row_root(y, 1)
        u = y - mu_m * A[1]
        x = np.clip(u, 0.0, 1.0)
        free = (u > 0.0) & (u <= 1.0)
        h11 = float(A[0][free] @ A[0][free])
        slope = -h11
        if mu_m > 0.0:
            h12 = float(A[0][free] @ A[1][free])
            h22 = float(A[1][free] @ A[1][free])
            if h22 > 0.0:
                slope = -(h11 - h12 * h12 / h22)
        return mu_m, float(A[0] @ x) - self.b[0], slope

    def _cases(self, z: np.ndarray) -> np.ndarray:
        A, b, tol = self.A, self.b, self.tol
        for k in (0, 1):  # one active row
            t = self._row_root(z, k)
            mu = np.zeros(2)
            mu[k] = t
            if float(A[1 - k] @ np.clip(z - t * A[k], 0.0, 1.0)) - b[1 - k] <= tol[1 - k]:
                return mu

        def outer(t):
            _, val, slope = self._both_active(z, t)
            return val, slope

        f0, s0 = outer(0.0)
        hi = float(np.max(z / A[0]))
        mu_c = _monotone_root(outer, 0.0, f0, s0, hi, outer(hi)[0], tol[0])
        return np.array([mu_c, self._both_active(z, mu_c)[0]])


def polytope(A: np.ndarray, b: np.ndarray) -> LinearPolytope:
    """BudgetPolytope (the two-row fast path) for two positive rows, else LinearPolytope."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 2 and A.shape[0] == 2 and np.all(A > 0):
        return BudgetPolytope(A[0], A[1], float(b[0]), float(b[1]))
    return LinearPolytope(A, b)


def _clip_all(y: np.ndarray, a: np.ndarray) -> float:
    """A t >= 0 beyond which every x_j with a_j > 0 of clip(y - t a, 0, 1) is 0."""
    pos = a > 0.0
    return max(float(np.max(y[pos] / a[pos])), 0.0) if np.any(pos) else 0.0


def _newton_step(h11: float, h12: float, h22: float, r: np.ndarray, work: np.ndarray) -> np.ndarray:
    """pinv(H_WW) r_W for the 2 x 2 PSD H = [[h11, h12], [h12, h22]] restricted to `work`.

    Closed form; eigenvalues below 1e-13 of the largest are treated as zero (a_C parallel to
    a_M on F makes H rank one: the minimum-norm step is taken).
    """
    step = np.zeros(2)
    if work[0] and work[1]:
        tr = h11 + h22
        if tr <= 0.0:
            return step
        det = h11 * h22 - h12 * h12
        if det > 1e-13 * tr * tr:
            step[0] = (h22 * r[0] - h12 * r[1]) / det
            step[1] = (h11 * r[1] - h12 * r[0]) / det
        else:  # rank one: H ~ tr * v v', v = (h11, h12) or (h12, h22) normalised
            v = np.array([h11, h12]) if h11 >= h22 else np.array([h12, h22])
            v /= np.linalg.norm(v)
            step = v * (v @ r) / tr
    elif work[0]:
        if h11 > 0.0:
            step[0] = r[0] / h11
    elif work[1]:
        if h22 > 0.0:
            step[1] = r[1] / h22
    return step


def _monotone_root(f, lo: float, flo: float, slo: float, hi: float, fhi: float, tol: float) -> float:
    """Root of a continuous non-increasing piecewise-linear f with f(lo) > tol >= f(hi).

    f(t) returns (value, right slope). Newton steps from the left end of the bracket (exact when
    no breakpoint lies in between); a step that leaves the bracket, or a bracket that fails to
    halve twice in a row, is replaced by the secant or bisection point. Returns a t with |f(t)| <= tol, or the
    right end of a bracket narrower than rounding (where f(t) <= tol still holds).
    """
    if flo <= tol:
        return lo
    if fhi > tol:
        raise RuntimeError("projection bracket does not contain the root")
    slow = False
    for _ in range(200):
        if fhi >= -tol:
            return hi
        width = hi - lo
        if width <= 4e-16 * max(abs(hi), 1e-300):
            return hi
        t = lo - flo / slo if slo < 0.0 else -1.0
        if not (lo < t < hi):
            t = lo + flo * width / (flo - fhi)  # secant of the bracket
            if not (lo < t < hi):
                t = lo + 0.5 * width
        ft, st = f(t)
        if ft > tol:
            lo, flo, slo = t, ft, st
        else:
            hi, fhi = t, ft
        if hi - lo > 0.5 * width:
            if slow:  # two steps in a row without halving the bracket: bisect
                mid = lo + 0.5 * (hi - lo)
                fm, sm = f(mid)
                if fm > tol:
                    lo, flo, slo = mid, fm, sm
                else:
                    hi, fhi = mid, fm
            slow = not slow
        else:
            slow = False
    return hi
