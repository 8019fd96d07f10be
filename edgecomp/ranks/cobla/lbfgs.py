"""Limited-memory BFGS Hessian approximation in compact form (Byrd, Nocedal & Schnabel 1994).

With the last h pairs s_i = x_{i+1} - x_i, y_i = g_{i+1} - g_i stored as the rows of S, Y
(h x n) and B_0 = delta I, the BFGS matrix is (BNS94, Theorem 2.3)

    B = delta I - W M^{-1} W^T,   W = [delta S^T, Y^T]  (n x 2h),
    M = [[delta S S^T, L], [L^T, -D]],

with L the strictly lower triangle of S Y^T (L_ij = s_i . y_j for i > j) and D = diag(s_i . y_i).
A product B v costs O(n h) and nothing n x n is ever formed. delta = y.y / s.y of the newest
pair (the usual scaling).

Positive definiteness: B is positive definite whenever every stored pair has s . y > 0. Each
new pair is Powell-damped (Powell 1978; Nocedal & Wright, Procedure 18.2): if
s . y < damping * s.Bs, y is replaced by theta y + (1 - theta) B s with
theta = (1 - damping) s.Bs / (s.Bs - s.y), which makes s . y = damping * s.Bs > 0. Pairs with
a negligible step (s.Bs <= 1e-16 * delta * ||s||^2 or ||s|| == 0) are skipped; if M becomes
numerically singular (nearly dependent steps) the oldest pairs are dropped.

The spectrum of B (needed for the QP step size) is computed in O(h^3) from the Gram matrix
G = W^T W, maintained incrementally: the non-trivial eigenvalues of W M^{-1} W^T are those of
G^{1/2} M^{-1} G^{1/2}, so eig(B) = {delta - theta_i} and delta itself (when n > 2h; smaller
problems are done densely).
"""

from __future__ import annotations

import numpy as np


class CompactLBFGS:
    """B = delta I - W M^{-1} W^T from the most recent `memory` (s, y) pairs."""

    def __init__(self, n: int, memory: int = 10, damping: float = 0.2, delta: float = 1.0):
        if memory < 1:
            raise ValueError("L-BFGS memory must be >= 1")
        if not 0.0 < damping < 1.0:
            raise ValueError("Powell damping must be in (0, 1)")
        self.n, self.memory, self.damping = int(n), int(memory), float(damping)
        self._S = np.zeros((self.memory, self.n))
        self._Y = np.zeros((self.memory, self.n))
        self._SS = np.zeros((self.memory, self.memory))  # S S^T
        self._SY = np.zeros((self.memory, self.memory))  # S Y^T  (SY[i, j] = s_i . y_j)
        self._YY = np.zeros((self.memory, self.memory))  # Y Y^T
        self.k = 0  # stored pairs, oldest first
        self.delta = float(delta)
        self._Minv = np.zeros((0, 0))

    # ---- state -------------------------------------------------------------------------
    def reset(self, delta: float | None = None) -> None:
        """Forget every pair: B = delta I."""
        self.k = 0
        if delta is not None:
            self.delta = float(delta)
        self._Minv = np.zeros((0, 0))

    @property
    def S(self) -> np.ndarray:
        return self._S[: self.k]

    @property
    def Y(self) -> np.ndarray:
        return self._Y[: self.k]

    # ---- products ----------------------------------------------------------------------
    def matvec(self, v: np.ndarray) -> np.ndarray:
        """B v in O(n h)."""
        out = self.delta * v
        if self.k == 0:
            return out
        k = self.k
        wv = np.concatenate([self.delta * (self.S @ v), self.Y @ v])
        u = self._Minv @ wv
        u[:k] *= self.delta
        out -= u[:k] @ self.S + u[k:] @ self.Y
        return out

    def quad(self, v: np.ndarray) -> float:
        """v . B v."""
        return float(v @ self.matvec(v))

    def dense(self) -> np.ndarray:
        """The explicit n x n matrix (for tests and tiny problems only)."""
        B = self.delta * np.eye(self.n)
        if self.k:
            W = np.hstack([self.delta * self.S.T, self.Y.T])
            B -= W @ self._Minv @ W.T
        return B

    def eig_bounds(self) -> tuple[float, float]:
        """(lambda_min, lambda_max) of B, exact, in O(h^3) from the maintained Gram matrices."""
        if self.k == 0 or self.n == 0:
            return self.delta, self.delta
        k, d = self.k, self.delta
        if self.n <= 2 * k:  # W spans everything: tiny problem, do it densely
            eig = np.linalg.eigvalsh(self.dense())
            return float(eig[0]), float(eig[-1])
        G = np.block([[d * d * self._SS[:k, :k], d * self._SY[:k, :k]],
                      [d * self._SY[:k, :k].T, self._YY[:k, :k]]])
        g, V = np.linalg.eigh(G)
        g = np.clip(g, 0.0, None)
        R = (V * np.sqrt(g)) @ V.T  # G^{1/2}
        theta = np.linalg.eigvalsh(R @ self._Minv @ R)
        eig = np.append(d - theta, d)
        return float(eig.min()), float(eig.max())

    # ---- update ------------------------------------------------------------------------
    def update(self, s: np.ndarray, y: np.ndarray) -> dict:
        """Add the pair (s, y) with Powell damping; returns what was done."""
        s = np.asarray(s, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ss = float(s @ s)
        Bs = self.matvec(s)
        sBs = float(s @ Bs)
        if ss == 0.0 or not np.isfinite(sBs) or sBs <= 1e-16 * self.delta * ss or not np.all(np.isfinite(y)):
            return {"skipped": True, "damped": False, "theta": 1.0}
        sy = float(s @ y)
        theta = 1.0
        if sy < self.damping * sBs:
            theta = (1.0 - self.damping) * sBs / (sBs - sy)
            y = theta * y + (1.0 - theta) * Bs
            sy = float(s @ y)
        if self.k == self.memory:
            self._drop_oldest()
        i = self.k
        self._S[i] = s
        self._Y[i] = y
        S, Y = self._S[: i + 1], self._Y[: i + 1]
        self._SS[i, : i + 1] = self._SS[: i + 1, i] = S @ s
        self._YY[i, : i + 1] = self._YY[: i + 1, i] = Y @ y
        self._SY[i, : i + 1] = Y @ s  # s_i . y_j
        self._SY[: i + 1, i] = S @ y  # s_j . y_i
        self.k += 1
        self.delta = float(y @ y) / sy
        self._refresh()
        return {"skipped": False, "damped": theta < 1.0, "theta": theta}

    def _drop_oldest(self) -> None:
        k = self.k
        for arr in (self._S, self._Y):
            arr[: k - 1] = arr[1:k]
        for mat in (self._SS, self._SY, self._YY):
            mat[: k - 1, : k - 1] = mat[1:k, 1:k]
        self.k -= 1

    def _refresh(self) -> None:
        """Recompute M^{-1}; drop the oldest pairs while M is numerically singular."""
        while self.k:
            k, d = self.k, self.delta
            SY = self._SY[:k, :k]
            L = np.tril(SY, -1)
            M = np.block([[d * self._SS[:k, :k], L], [L.T, -np.diag(np.diag(SY))]])
            if np.all(np.isfinite(M)) and np.linalg.cond(M) < 1e14:
                self._Minv = np.linalg.inv(M)
                return
            self._drop_oldest()
        self._Minv = np.zeros((0, 0))
