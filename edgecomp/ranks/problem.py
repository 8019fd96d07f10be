"""The rank-selection problem as numbers.

Two costs constrain the ranks: a *compute* cost N_C, in `RankProblem.compute_unit` (MACs, or
milliseconds when it is a per-layer latency measured on the target: `edgecomp export --cost
latency`, edgecomp.ranks.latency), and a *memory* cost N_M in parameters.

Layer i has singular values sigma_i1 >= ... >= sigma_iK_i (K_i = max rank). Keeping the first
r_i components of the factored layer costs (COBLA, Li & Shi, eq. 3-4: costs linear in the masks)

    compute_i(r) = r * compute_per_rank_i + compute_intercept_i
    params_i(r)  = r * params_per_rank_i  + bias_params_i

as long as the factored layer is cheaper than the original. From the *break-even rank* b_i on
(the smallest r at which the factored layer is no cheaper than the original in compute or in
parameters) the layer is left unfactored and costs its original_compute / original_params. The
network cost is

    N_C(r) = fixed_compute + sum_i compute_i(r_i)
    N_M(r) = fixed_params  + sum_i params_i(r_i)

where the fixed terms count every layer that is not decomposed (BatchNorm, depthwise convs, layers
too small to gain, ...; for latency, also per-call overheads). compute_intercept is 0 for MACs and
the fitted intercept for latency. The torch glue converts a memory budget in bytes with the
profile's bytes per parameter.

For the relaxed problem (COBLA eq. 8) one mask m_ij in [0, 1] per singular component; the costs
are linear in m with coefficients `compute_per_rank_i` / `params_per_rank_i` for each j of layer i
(`linear_costs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class LayerSpectrum:
    """One decomposable layer: its spectrum and exact per-rank costs (compute in its problem's
    compute_unit, memory in parameters)."""

    name: str
    sigma: np.ndarray
    compute_per_rank: float
    params_per_rank: float
    original_compute: float
    original_params: float
    bias_params: float = 0.0
    shape: tuple[int, int] = (0, 0)  # (rows, cols) of the matricization, for VBMF / Gavish-Donoho
    compute_intercept: float = 0.0

    def __post_init__(self):
        sigma = np.asarray(self.sigma, dtype=np.float64).reshape(-1)
        if sigma.size == 0:
            raise ValueError(f"layer {self.name}: empty spectrum")
        if np.any(np.diff(sigma) > 1e-9 * max(1.0, float(sigma[0]))):
            raise ValueError(f"layer {self.name}: singular values must be non-increasing")
        object.__setattr__(self, "sigma", sigma)
        if self.compute_per_rank <= 0 or self.params_per_rank <= 0:
            raise ValueError(f"layer {self.name}: per-rank costs must be positive")

    @property
    def max_rank(self) -> int:
        return int(self.sigma.size)

    @cached_property
    def break_even_rank(self) -> int:
        """Smallest rank r >= 1 at which factoring stops paying off in compute or in parameters.

        max_rank + 1 when the factored layer is cheaper at every rank.
        """
        r_compute = math.ceil((self.original_compute - self.compute_intercept) / self.compute_per_rank - 1e-12)
        r_par = math.ceil((self.original_params - self.bias_params) / self.params_per_rank - 1e-12)
        return int(max(1, min(r_compute, r_par, self.max_rank + 1)))

    @property
    def max_useful_rank(self) -> int:
        """The largest rank that is still factored (break-even - 1); 0 if none is."""
        return self.break_even_rank - 1

    def is_factored(self, rank: int) -> bool:
        return rank < self.break_even_rank

    def cost(self, rank: int) -> tuple[float, float]:
        """(compute, params) of this layer when `rank` components are kept."""
        if rank < 1:
            raise ValueError(f"layer {self.name}: rank must be >= 1, got {rank}")
        if rank >= self.break_even_rank:
            return float(self.original_compute), float(self.original_params)
        return rank * self.compute_per_rank + self.compute_intercept, rank * self.params_per_rank + self.bias_params

    def energy(self, rank: int) -> float:
        """Fraction of spectral energy sum_{j<=r} sigma_j^2 / sum_j sigma_j^2 kept."""
        s2 = self.sigma**2
        total = float(s2.sum())
        return float(s2[:rank].sum() / total) if total > 0 else 1.0


@dataclass(frozen=True)
class RankProblem:
    """Layers + fixed costs + the two budgets (N_C,max in `compute_unit`, N_M,max in parameters)."""

    layers: tuple[LayerSpectrum, ...]
    compute_budget: float
    param_budget: float
    fixed_compute: float = 0.0
    fixed_params: float = 0.0
    compute_unit: str = "MACs"  # of every compute number here: "MACs", or "ms" for a measured latency

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")

    # ---- sizes -------------------------------------------------------------------------
    @property
    def max_ranks(self) -> np.ndarray:
        return np.array([layer.max_rank for layer in self.layers], dtype=np.int64)

    @property
    def n_masks(self) -> int:
        return int(self.max_ranks.sum())

    @cached_property
    def offsets(self) -> np.ndarray:
        """Start index of each layer's masks in the flattened mask vector (length n_layers + 1)."""
        return np.concatenate([[0], np.cumsum(self.max_ranks)]).astype(np.int64)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Split a flat per-mask vector into one array per layer."""
        return [flat[self.offsets[i] : self.offsets[i + 1]] for i in range(len(self.layers))]

    # ---- costs -------------------------------------------------------------------------
    def cost(self, ranks) -> tuple[float, float]:
        """(N_C, N_M) of the model actually built with these ranks (break-even rule applied)."""
        ranks = np.asarray(ranks, dtype=np.int64)
        if ranks.shape != (len(self.layers),):
            raise ValueError(f"expected {len(self.layers)} ranks, got shape {ranks.shape}")
        compute, params = self.fixed_compute, self.fixed_params
        for layer, r in zip(self.layers, ranks):
            c, p = layer.cost(int(r))
            compute += c
            params += p
        return float(compute), float(params)

    def feasible(self, ranks, *, rtol: float = 1e-12) -> bool:
        compute, params = self.cost(ranks)
        return compute <= self.compute_budget * (1 + rtol) and params <= self.param_budget * (1 + rtol)

    @property
    def original_cost(self) -> tuple[float, float]:
        """(N_C, N_M) of the unfactored model."""
        compute = self.fixed_compute + sum(layer.original_compute for layer in self.layers)
        params = self.fixed_params + sum(layer.original_params for layer in self.layers)
        return float(compute), float(params)

    @property
    def min_ranks(self) -> np.ndarray:
        return np.ones(len(self.layers), dtype=np.int64)

    @property
    def min_cost(self) -> tuple[float, float]:
        """The smallest model the scheme can build: every layer at rank 1."""
        return self.cost(self.min_ranks)

    def is_satisfiable(self) -> bool:
        return self.feasible(self.min_ranks)

    def linear_costs(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Per-mask cost coefficients (a_C, a_M) and constants (c_C, c_M) of the relaxation.

        N_C(m) = a_C . m + c_C,  N_M(m) = a_M . m + c_M   (COBLA eq. 8 constraints)
        """
        a_c = np.concatenate([np.full(l.max_rank, l.compute_per_rank) for l in self.layers])
        a_m = np.concatenate([np.full(l.max_rank, l.params_per_rank) for l in self.layers])
        c_c = float(self.fixed_compute + sum(l.compute_intercept for l in self.layers))
        c_m = float(self.fixed_params + sum(l.bias_params for l in self.layers))
        return a_c, a_m, c_c, c_m

    def with_budgets(self, compute_budget: float, param_budget: float) -> "RankProblem":
        """The same layers and fixed costs under other budgets (compute in `compute_unit`)."""
        return RankProblem(self.layers, compute_budget, param_budget, self.fixed_compute, self.fixed_params,
                           self.compute_unit)


@dataclass
class RankSelection:
    """A method's answer: integer ranks per layer, optionally the relaxed masks, and diagnostics."""

    method: str
    ranks: np.ndarray
    masks: np.ndarray | None = None  # flat relaxed masks m_hat (COBLA) or None
    enforces_budgets: bool = True  # False for VBMF / Gavish-Donoho (ranks reported as found)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ranks = np.asarray(self.ranks, dtype=np.int64)
