"""Rank of each layer from empirical variational Bayesian matrix factorization (EVBMF).

Nakajima, Sugiyama, Babacan & Tomioka, "Global analytic solution of fully-observed variational
Bayesian matrix factorization", JMLR 14 (2013); the empirical-Bayes threshold and noise
estimate follow Nakajima et al., "Perfect dimensionality recovery by variational Bayesian PCA"
(NIPS 2012) as implemented in the widely used VBMF.py (Nakajima's MATLAB code, ported by
C. van den Bogaard; used for Tucker rank selection by Kim et al. 2016).

For an L x M matricization (L <= M, alpha = L/M) with singular values gamma_1 >= ... >= gamma_L:

  tau_bar = 2.5129 sqrt(alpha),   x_bar = (1 + tau_bar)(1 + alpha / tau_bar)
  threshold  gamma_EVB = sqrt(M sigma^2 x_bar);   rank = #{h : gamma_h > gamma_EVB}   (at least 1)

and the noise variance sigma^2 is the minimizer of the EVB free energy over sigma^2 alone
(the other parameters eliminated analytically), with x_h = gamma_h^2 / (M sigma^2):

  F(sigma^2) = sum_{x_h <= x_bar} (x_h - log x_h)
             + sum_{x_h >  x_bar} (x_h - tau_h + log((tau_h + 1) / x_h) + alpha log(tau_h / alpha + 1)),
  tau_h = (x_h - (1 + alpha) + sqrt((x_h - (1 + alpha))^2 - 4 alpha)) / 2,

searched (bounded scalar minimization) between
  lower = max(gamma_{H'+1}^2 / (M x_bar), mean_{h > H'} gamma_h^2 / M),
          H' = min(ceil(L/(1+alpha)) - 1, L) - 1 (0-based index),
  upper = sum_h gamma_h^2 / (L M).
Only the singular values are needed (the spectrum is the full one, so the residual term is 0).

Budgets are not enforced: the ranks are what VBMF finds; info reports their cost.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from edgecomp.ranks.baselines._common import canonical_ranks, cost_report, matrix_dims
from edgecomp.ranks.problem import RankProblem, RankSelection

TAU_BAR_COEFF = 2.5129  # tau_bar / sqrt(alpha); the zero crossing of the threshold function at alpha = 1


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    d = x - (1 + alpha)
    return 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))


def evb_free_energy(sigma2: float, gamma: np.ndarray, L: int, M: int) -> float:
    """F(sigma^2) of the module docstring (full spectrum, H = L, no residual)."""
    alpha = L / M
    tau_bar = TAU_BAR_COEFF * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    x = gamma**2 / (M * sigma2)
    small, big = x[x <= x_bar], x[x > x_bar]
    tau = _tau(big, alpha)
    eps = np.finfo(np.float64).tiny  # exact-zero singular values: their term is then constant
    return float(
        np.sum(small - np.log(small + eps))
        + np.sum(big - tau)
        + np.sum(np.log((tau + 1) / big))
        + alpha * np.sum(np.log(tau / alpha + 1))
    )


def evbmf_rank(gamma: np.ndarray, L: int, M: int) -> tuple[int, float, float]:
    """(rank, noise variance sigma^2, threshold gamma_EVB) of the L x M matrix with spectrum gamma."""
    gamma = np.asarray(gamma, dtype=np.float64)
    alpha = L / M
    tau_bar = TAU_BAR_COEFF * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_ub = int(min(math.ceil(L / (1 + alpha)) - 1, L)) - 1
    upper = float(np.sum(gamma**2)) / (L * M)
    if upper <= 0:
        return 0, 0.0, 0.0
    tail = gamma[h_ub + 1:]
    lower = max(float(tail[0] ** 2) / (M * x_bar), float(np.mean(tail**2)) / M)
    if lower < upper:
        res = minimize_scalar(evb_free_energy, args=(gamma, L, M), bounds=(lower, upper), method="bounded")
        sigma2 = float(res.x)
    else:  # degenerate spectrum: the bracket collapsed
        sigma2 = upper
    threshold = math.sqrt(M * sigma2 * x_bar)
    return int(np.sum(gamma > threshold)), sigma2, threshold


def select_vbmf(problem: RankProblem) -> RankSelection:
    raw, sigma2s, thresholds = [], [], []
    for layer in problem.layers:
        L, M = matrix_dims(layer)
        rank, sigma2, thr = evbmf_rank(layer.sigma, L, M)
        raw.append(max(1, rank))
        sigma2s.append(sigma2)
        thresholds.append(thr)
    raw = np.array(raw, dtype=np.int64)
    ranks = canonical_ranks(problem, raw)
    info = {"raw_ranks": raw.tolist(), "noise_variance": sigma2s, "thresholds": thresholds}
    info.update(cost_report(problem, ranks))
    return RankSelection(method="vbmf", ranks=ranks, enforces_budgets=False, info=info)
