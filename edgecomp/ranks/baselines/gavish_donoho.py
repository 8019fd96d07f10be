"""Rank of each layer from the Gavish-Donoho optimal hard threshold, noise level unknown.

M. Gavish & D. L. Donoho, "The optimal hard threshold for singular values is 4/sqrt(3)",
IEEE Trans. Inf. Theory 60(8), 2014. For an m x n matricization with beta = min/max in (0, 1] and
singular values y_1 >= ... >= y_min(m,n):

  tau = omega(beta) * y_med,          y_med = median of the singular values,
  omega(beta) = lambda*(beta) / sqrt(mu_beta),
  lambda*(beta) = sqrt(2 (beta + 1) + 8 beta / ((beta + 1) + sqrt(beta^2 + 14 beta + 1)))   (eq. 11)
  mu_beta = median of the Marchenko-Pastur law with ratio beta and unit variance, i.e. of the
            density sqrt((b_+ - t)(t - b_-)) / (2 pi beta t) on [b_-, b_+] = [(1 - sqrt beta)^2, (1 + sqrt beta)^2],
  rank = #{i : y_i > tau}  (at least 1).

omega="exact" (default) computes mu_beta numerically (quadrature + root finding, as in the
authors' optimal_SVHT_coef.m); omega="approx" uses their cubic fit (eq. 5)
omega(beta) ~ 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43. At beta = 1, lambda* = 4/sqrt(3).

Budgets are not enforced: the ranks are what the threshold gives; info reports their cost.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq

from edgecomp.ranks.baselines._common import canonical_ranks, cost_report, matrix_dims
from edgecomp.ranks.problem import RankProblem, RankSelection

OMEGA_MODES = ("exact", "approx")


def lambda_star(beta: float) -> float:
    """Optimal threshold coefficient for known noise, eq. (11): tau = lambda*(beta) sqrt(n) sigma."""
    return math.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + math.sqrt(beta * beta + 14 * beta + 1)))


@lru_cache(maxsize=1024)
def marchenko_pastur_median(beta: float) -> float:
    """Median of the Marchenko-Pastur distribution with aspect ratio beta and unit variance."""
    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2

    def density(t: float) -> float:
        return math.sqrt(max((hi - t) * (t - lo), 0.0)) / (2 * math.pi * beta * t)

    def cdf_minus_half(x: float) -> float:
        return quad(density, lo, x, epsabs=1e-13, epsrel=1e-12, limit=200)[0] - 0.5

    return float(brentq(cdf_minus_half, lo, hi, xtol=1e-14, rtol=1e-13))


def omega_coefficient(beta: float, mode: str = "exact") -> float:
    """omega(beta): tau = omega(beta) * median singular value (unknown noise level)."""
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    if mode == "exact":
        return lambda_star(beta) / math.sqrt(marchenko_pastur_median(float(beta)))
    if mode == "approx":
        return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    raise ValueError(f"omega mode must be one of {OMEGA_MODES}, got {mode!r}")


def gavish_donoho_rank(sigma: np.ndarray, rows: int, cols: int, mode: str = "exact") -> tuple[int, float]:
    """(rank, threshold tau) for an rows x cols matrix with full spectrum `sigma`."""
    beta = min(rows, cols) / max(rows, cols)
    tau = omega_coefficient(beta, mode) * float(np.median(sigma))
    return int(np.sum(np.asarray(sigma) > tau)), tau


def select_gavish_donoho(problem: RankProblem, *, omega: str = "exact") -> RankSelection:
    mode = omega
    if mode not in OMEGA_MODES:
        raise ValueError(f"gavish-donoho: omega must be one of {OMEGA_MODES}, got {mode!r}")
    raw, thresholds = [], []
    for layer in problem.layers:
        L, M = matrix_dims(layer)
        rank, tau = gavish_donoho_rank(layer.sigma, L, M, mode)
        raw.append(max(1, rank))
        thresholds.append(tau)
    raw = np.array(raw, dtype=np.int64)
    ranks = canonical_ranks(problem, raw)
    info = {"omega_mode": mode, "raw_ranks": raw.tolist(), "thresholds": thresholds}
    info.update(cost_report(problem, ranks))
    return RankSelection(method="gavish-donoho", ranks=ranks, enforces_budgets=False, info=info)
