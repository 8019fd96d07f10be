"""Exact Euclidean projection onto the feasible set of COBLA's relaxed problem (eq. 8).

The free masks x live in

    P = { x : 0 <= x <= 1,  a_C . x <= b_C,  a_M . x <= b_M }

(a_C, a_M > 0 per-mask cost coefficients; b_C, b_M the budgets left after the constant cost
terms and the masks fixed to 1). The projection of z solves min_x 1/2 ||x - z||^2, x in P.

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

Tolerance: row k counts as met within 1e-12 * (||a_k||_1 + |b_k| + 1).
"""

from __future__ import annotations

import numpy as np

_RTOL = 1e-12
_NEWTON_ITERS = 25


class BudgetPolytope:
    """The set P above; `project` is the exact Euclidean projection onto it."""

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
        self.A = np.ascontiguousarray(np.vstack([a_c, a_m]))
        self._AA = np.ascontiguousarray(np.vstack([a_c * a_c, a_c * a_m, a_m * a_m]))  # for A_F A_F^T
        self.b = np.array([float(b_c), float(b_m)])
        self.n = a_c.size
        self.tol = _RTOL * (self.A.sum(axis=1) + np.abs(self.b) + 1.0)
        self.mu = np.zeros(2)  # multipliers of the last projection (warm start)
        self.fallbacks = 0  # how often the exact case analysis was needed (diagnostics)

    # ---- feasibility -------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        """P is empty iff its smallest point x = 0 violates a row, i.e. b_k < 0."""
        return bool(np.any(self.b < -self.tol))

    def row_values(self, x: np.ndarray) -> np.ndarray:
        """(a_C . x, a_M . x)."""
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
        x = np.clip(z, 0.0, 1.0)
        if np.all(self.A @ x - self.b <= self.tol):
            self.mu = np.zeros(2)
            return x
        mu = self._newton(z, np.maximum(self.mu, 0.0))
        if mu is None:
            self.fallbacks += 1
            mu = self._cases(z)
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

    def _newton(self, z: np.ndarray, mu: np.ndarray) -> np.ndarray | None:
        """Projected semismooth Newton ascent on D(mu); None if it stalls."""
        y, r, dual = self._state(z, mu)
        viol = self._violation(mu, r)
        for _ in range(_NEWTON_ITERS):
            if viol <= 1.0:
                return mu
            free = ((y > 0.0) & (y < 1.0)).astype(np.float64)
            h11, h12, h22 = self._AA @ free  # A_F A_F^T
            # multipliers held at zero: at the bound with the dual gradient pointing outward
            work = ~((mu <= 0.0) & (r < 0.0))
            step = _newton_step(h11, h12, h22, r, work)
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
        hi = float(np.max(y / a))  # beyond this every mask is clipped to 0: f = -b <= 0
        return _monotone_root(f, 0.0, f0, s0, hi, f(hi)[0], tol)

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
