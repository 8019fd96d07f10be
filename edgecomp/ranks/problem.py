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

Further budgets (`RankProblem.extra`, one `LinearBudget` each, e.g. a latency in ms measured on the
target beside MACs and memory) are linear in the ranks the same way:

    N_k(r) = fixed_k + sum_i cost_ik(r_i),   cost_ik(r) = r * per_rank_ik + intercept_ik  (factored)
                                                        = original_ik                  (dense)

and each caps the break-even rank: layer i is left dense from the smallest r at which its factored
form is no cheaper by any of the costs (`LinearBudget.break_even_rank`). Row order everywhere
(`costs`, `budgets`, `linear_rows`, `budget_rows`): compute, params, then `extra` in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from edgecomp.errors import InfeasibleBudgetError


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
    break_even_cap: int = 0  # > 0: the break-even rank is at most this (set by RankProblem from its extra budgets)

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
        """Smallest rank r >= 1 at which factoring stops paying off in compute or in parameters (or, through
        `break_even_cap`, in an extra budget of the problem).

        max_rank + 1 when the factored layer is cheaper at every rank.
        """
        r_compute = math.ceil((self.original_compute - self.compute_intercept) / self.compute_per_rank - 1e-12)
        r_par = math.ceil((self.original_params - self.bias_params) / self.params_per_rank - 1e-12)
        cap = self.break_even_cap if self.break_even_cap >= 1 else self.max_rank + 1
        return int(max(1, min(r_compute, r_par, cap, self.max_rank + 1)))

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
class LinearBudget:
    """One more budget on the ranks, linear in them like the compute cost (e.g. latency in ms):

        N(r) = fixed + sum_i cost_i(r_i) <= budget,
        cost_i(r) = r * per_rank[i] + intercept[i]   while layer i is factored,  original[i]  once it is dense.

    Arrays have one entry per layer of the RankProblem, in its order. The break-even rule: layer i is
    not factored at ranks r with r * per_rank[i] + intercept[i] >= break_even_ratio * original[i]
    (ratio 1: not cheaper than dense; edgecomp.ranks.latency.NOT_FASTER: not measurably faster).
    A budget of +inf leaves the row unconstrained (it is still reported)."""

    name: str
    unit: str
    per_rank: np.ndarray
    intercept: np.ndarray
    original: np.ndarray
    budget: float
    fixed: float = 0.0
    break_even_ratio: float = 1.0

    def __post_init__(self):
        arrays = [np.asarray(getattr(self, f), dtype=np.float64).reshape(-1) for f in ("per_rank", "intercept", "original")]
        if len({a.size for a in arrays}) != 1:
            raise ValueError(f"budget {self.name}: per_rank, intercept and original need one entry per layer")
        if not all(np.all(np.isfinite(a)) for a in arrays) or not math.isfinite(self.fixed):
            raise ValueError(f"budget {self.name}: costs must be finite")
        if np.any(arrays[0] <= 0) or np.any(arrays[1] < 0) or np.any(arrays[2] < 0):
            raise ValueError(f"budget {self.name}: per-rank costs must be positive, intercepts and dense costs >= 0")
        if math.isnan(self.budget) or self.budget == -math.inf:
            raise ValueError(f"budget {self.name}: the budget must be a number or +inf, got {self.budget}")
        if not 0 < self.break_even_ratio <= 1:
            raise ValueError(f"budget {self.name}: break_even_ratio must be in (0, 1]")
        for name, a in zip(("per_rank", "intercept", "original"), arrays):
            object.__setattr__(self, name, a)
        object.__setattr__(self, "budget", float(self.budget))
        object.__setattr__(self, "fixed", float(self.fixed))

    def break_even_rank(self, i: int, max_rank: int) -> int:
        """Smallest r >= 1 with r * per_rank[i] + intercept[i] >= break_even_ratio * original[i]
        (max_rank + 1 when there is none)."""
        r = math.ceil((self.break_even_ratio * self.original[i] - self.intercept[i]) / self.per_rank[i] - 1e-12)
        return int(max(1, min(r, max_rank + 1)))

    def layer_cost(self, i: int, layer: "LayerSpectrum", rank: int) -> float:
        """cost_i(rank), dense from the layer's break-even rank on (which includes this budget's)."""
        if rank >= layer.break_even_rank:
            return float(self.original[i])
        return float(rank * self.per_rank[i] + self.intercept[i])

    def with_budget(self, budget: float) -> "LinearBudget":
        return replace(self, budget=float(budget))


@dataclass(frozen=True)
class RankProblem:
    """Layers + fixed costs + the budgets: N_C,max in `compute_unit`, N_M,max in parameters, and any
    number of further linear budgets (`extra`; none for schemes tucker2 / auto, whose ChoiceLayers have no
    per-rank costs)."""

    layers: tuple[LayerSpectrum, ...]
    compute_budget: float
    param_budget: float
    fixed_compute: float = 0.0
    fixed_params: float = 0.0
    compute_unit: str = "MACs"  # of every compute number here: "MACs", or "ms" for a measured latency
    extra: tuple[LinearBudget, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "extra", tuple(self.extra))
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        labels = [label for label, _ in self.budget_rows()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"budget names must be unique, got {labels}")
        if self.extra:
            self._cap_layers()

    def _cap_layers(self) -> None:
        """Lower every layer's break-even rank to where it stops paying off in an extra budget."""
        for b in self.extra:
            if b.per_rank.size != len(self.layers):
                raise ValueError(f"budget {b.name}: {b.per_rank.size} per-layer costs for {len(self.layers)} layers")
        layers = []
        for i, layer in enumerate(self.layers):
            if getattr(layer, "choice_compute", None) is not None:  # an edgecomp.ranks.choices.ChoiceLayer
                raise ValueError(f"layer {layer.name}: extra budgets ({', '.join(b.name for b in self.extra)}) "
                                 "need per-rank costs; choice layers (schemes tucker2, auto) have none")
            cap = min(b.break_even_rank(i, layer.max_rank) for b in self.extra)
            if cap < layer.break_even_rank:
                layer = replace(layer, break_even_cap=cap)
            layers.append(layer)
        object.__setattr__(self, "layers", tuple(layers))

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

    # ---- budgets -----------------------------------------------------------------------
    def budget_rows(self) -> list[tuple[str, str]]:
        """(label, unit) of every budget row: ("MAC", "MACs") or ("latency", "ms"), ("parameter",
        "parameters"), then each extra budget's (name, unit)."""
        compute = {"MACs": "MAC", "ms": "latency"}.get(self.compute_unit, "compute")
        return [(compute, self.compute_unit), ("parameter", "parameters"), *((b.name, b.unit) for b in self.extra)]

    @property
    def budgets(self) -> np.ndarray:
        """Every row's budget: compute, params, then the extra budgets."""
        return np.array([self.compute_budget, self.param_budget, *(b.budget for b in self.extra)], dtype=np.float64)

    # ---- costs -------------------------------------------------------------------------
    def _check_ranks(self, ranks) -> np.ndarray:
        ranks = np.asarray(ranks, dtype=np.int64)
        if ranks.shape != (len(self.layers),):
            raise ValueError(f"expected {len(self.layers)} ranks, got shape {ranks.shape}")
        return ranks

    def cost(self, ranks) -> tuple[float, float]:
        """(N_C, N_M) of the model actually built with these ranks (break-even rule applied)."""
        ranks = self._check_ranks(ranks)
        compute, params = self.fixed_compute, self.fixed_params
        for layer, r in zip(self.layers, ranks):
            c, p = layer.cost(int(r))
            compute += c
            params += p
        return float(compute), float(params)

    def extra_cost(self, ranks) -> np.ndarray:
        """N_k of every extra budget for these ranks (break-even rule applied)."""
        ranks = self._check_ranks(ranks)
        return np.array([b.fixed + sum(b.layer_cost(i, layer, int(r)) for i, (layer, r) in
                                       enumerate(zip(self.layers, ranks))) for b in self.extra], dtype=np.float64)

    def costs(self, ranks) -> np.ndarray:
        """Every row's cost (compute, params, extras) of the model built with these ranks."""
        return np.concatenate([self.cost(ranks), self.extra_cost(ranks)])

    def feasible(self, ranks, *, rtol: float = 1e-12) -> bool:
        return bool(np.all(self.costs(ranks) <= self.budgets * (1 + rtol)))

    @property
    def original_cost(self) -> tuple[float, float]:
        """(N_C, N_M) of the unfactored model."""
        compute = self.fixed_compute + sum(layer.original_compute for layer in self.layers)
        params = self.fixed_params + sum(layer.original_params for layer in self.layers)
        return float(compute), float(params)

    @property
    def original_costs(self) -> np.ndarray:
        """Every row's cost of the unfactored model."""
        return np.array([*self.original_cost, *(b.fixed + float(b.original.sum()) for b in self.extra)])

    @property
    def min_ranks(self) -> np.ndarray:
        return np.ones(len(self.layers), dtype=np.int64)

    @property
    def min_cost(self) -> tuple[float, float]:
        """The smallest model the scheme can build: every layer at rank 1."""
        return self.cost(self.min_ranks)

    @property
    def min_costs(self) -> np.ndarray:
        """Every row's cost at rank 1 everywhere, the least each row can reach (all costs grow with the rank)."""
        return self.costs(self.min_ranks)

    def is_satisfiable(self) -> bool:
        return self.feasible(self.min_ranks)

    def binding_rows(self, costs, *, rtol: float = 1e-12) -> list[int]:
        """Indices of the rows whose `costs` exceed their budget."""
        return [int(k) for k in np.flatnonzero(np.asarray(costs) > self.budgets * (1 + rtol))]

    def linear_costs(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Per-mask cost coefficients (a_C, a_M) and constants (c_C, c_M) of the relaxation.

        N_C(m) = a_C . m + c_C,  N_M(m) = a_M . m + c_M   (COBLA eq. 8 constraints)
        """
        a_c = np.concatenate([np.full(l.max_rank, l.compute_per_rank) for l in self.layers])
        a_m = np.concatenate([np.full(l.max_rank, l.params_per_rank) for l in self.layers])
        c_c = float(self.fixed_compute + sum(l.compute_intercept for l in self.layers))
        c_m = float(self.fixed_params + sum(l.bias_params for l in self.layers))
        return a_c, a_m, c_c, c_m

    def linear_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, c): every row k's relaxed cost is N_k(m) = A[k] . m + c[k] (rows as in `budget_rows`)."""
        a_c, a_m, c_c, c_m = self.linear_costs()
        rows, consts = [a_c, a_m], [c_c, c_m]
        for b in self.extra:
            rows.append(np.repeat(b.per_rank, self.max_ranks) if self.layers else np.zeros(0))
            consts.append(b.fixed + float(b.intercept.sum()))
        return np.vstack(rows).reshape(len(rows), self.n_masks), np.array(consts)

    def with_budgets(self, compute_budget: float, param_budget: float,
                     extra_budgets=None) -> "RankProblem":
        """The same layers, fixed costs and extra budgets under other budgets (compute in `compute_unit`;
        extra_budgets: one per extra budget, None keeps theirs)."""
        extra = self.extra
        if extra_budgets is not None:
            extra_budgets = list(extra_budgets)
            if len(extra_budgets) != len(extra):
                raise ValueError(f"expected {len(extra)} extra budgets, got {len(extra_budgets)}")
            extra = tuple(b.with_budget(v) for b, v in zip(extra, extra_budgets))
        return RankProblem(self.layers, compute_budget, param_budget, self.fixed_compute, self.fixed_params,
                           self.compute_unit, extra)

    def with_extra(self, extra) -> "RankProblem":
        """The same problem with `extra` as its further budgets (replacing any it had; the break-even caps
        already applied to its layers stay)."""
        return RankProblem(self.layers, self.compute_budget, self.param_budget, self.fixed_compute,
                           self.fixed_params, self.compute_unit, tuple(extra))


def describe_costs(problem: RankProblem, values) -> str:
    """'0.8 ms and 10 parameters' / '5 MACs, 10 parameters and 2 ms latency': one entry per row."""
    parts = []
    for k, ((label, unit), v) in enumerate(zip(problem.budget_rows(), values)):
        parts.append(f"{v:.6g} {unit}" + (f" {label}" if k >= 2 else ""))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def infeasible_budget_error(problem: RankProblem, prefix: str, minimums=None) -> InfeasibleBudgetError:
    """InfeasibleBudgetError for `problem` whose smallest model (`minimums`, default every row at rank 1)
    does not fit: names every row over budget with its minimum achievable cost. min_macs / min_params
    carry the compute / params minimums; `minimums` (label -> value) and `binding` (labels over budget)
    every row's."""
    mins = problem.min_costs if minimums is None else np.asarray(minimums, dtype=np.float64)
    rows = problem.budget_rows()
    over = problem.binding_rows(mins) or list(range(len(rows)))
    binding = "; ".join(f"{rows[k][0]} budget {problem.budgets[k]:.6g} {rows[k][1]} < minimum achievable "
                        f"{mins[k]:.6g} {rows[k][1]}" for k in over)
    error = InfeasibleBudgetError(
        f"{prefix} needs {describe_costs(problem, mins)}, but the budgets are {describe_costs(problem, problem.budgets)}"
        + (f" (over: {binding})" if problem.extra else ""),
        min_macs=float(mins[0]), min_params=float(mins[1]))
    error.minimums = {label: float(v) for (label, _), v in zip(rows, mins)}
    error.binding = [rows[k][0] for k in over]
    return error


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
