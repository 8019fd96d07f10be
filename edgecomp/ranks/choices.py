"""Layers whose options are an explicit list of choices (schemes tucker2 and auto), and how every layer of a
rank problem reads as such a list.

A `ChoiceLayer` lists its choices with exact costs and squared Frobenius errors: Tucker-2 (r1, r2) pairs
(scheme tucker2), or the union of a conv layer's spatial / channel / cp ranks and Tucker-2 pairs pruned to
their Pareto frontier (scheme auto, `pareto_front`), the dense layer last. `layer_options` reads any layer
(ChoiceLayer or SVD layer) as its options: what RankSelection.ranks holds for each (a choice number or a
rank), exact costs, and relative squared errors ||W - W_hat||_F^2 / ||W||_F^2, the unfactored layer (or an
SVD layer's full rank) last. The choice-based selectors here and in edgecomp.ranks.baselines.on_choices
work on those options.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecomp.ranks.knapsack import (LayerCandidates, infeasible_error, layer_candidates, solve_layers, solver_info,
                                     truncation_errors)
from edgecomp.ranks.problem import LayerSpectrum, RankProblem, RankSelection

TUCKER2, DENSE = "tucker2", "dense"
RANKED_SCHEMES = ("spatial", "channel", "cp", "linear")  # choices that are one rank of one scheme


@dataclass(frozen=True)
class ChoiceLayer(LayerSpectrum):
    """A layer whose options are an explicit list of choices instead of ranks 1..K with linear costs: a
    Tucker-2 conv ((r1, r2) pairs, edgecomp.factor.tucker.pareto_choices) or, under scheme auto, a conv's
    spatial / channel / cp ranks and Tucker-2 pairs together; the dense layer last.

    In a RankProblem its "rank" is the 1-based choice number k: cost(k) = (choice_compute[k-1],
    choice_params[k-1]). Choice 1 is the cheapest in both costs (so RankProblem.min_cost is every layer at
    its cheapest choice); the factored choices are ordered by compute (then params) and the last choice is
    the dense layer (max_rank = break_even_rank = the number of choices, so is_factored(k) is k < max_rank).
    errors: the squared Frobenius error of each choice (0 for the dense one); weight_energy: ||W||_F^2.
    choice_schemes: each choice's scheme ("tucker2", "spatial", "channel", "cp", "linear"; "dense" last);
    default: "tucker2" for every factored choice. r1s / r2s: a tucker2 choice's (r1, r2), the dense layer's
    (c, f), 0 otherwise; choice_ranks: a spatial / channel / cp / linear choice's rank, 0 otherwise.
    sigma is a placeholder (ones, one per choice) and the per-rank costs are a representative factored
    form's: methods that read them as a spectrum with linear costs do not apply.
    """

    r1s: np.ndarray = None
    r2s: np.ndarray = None
    choice_compute: np.ndarray = None
    choice_params: np.ndarray = None
    errors: np.ndarray = None
    weight_energy: float = 0.0
    choice_schemes: np.ndarray = None
    choice_ranks: np.ndarray = None

    def __post_init__(self):
        super().__post_init__()
        n = self.sigma.size
        if self.choice_schemes is None:
            object.__setattr__(self, "choice_schemes", np.array([TUCKER2] * (n - 1) + [DENSE]))
        if self.choice_ranks is None:
            object.__setattr__(self, "choice_ranks", np.zeros(n, dtype=np.int64))
        for name in ("r1s", "r2s", "choice_compute", "choice_params", "errors", "choice_schemes", "choice_ranks"):
            value = np.asarray(getattr(self, name)).reshape(-1)
            if value.size != n:
                raise ValueError(f"layer {self.name}: {name} needs one entry per choice ({n}), got {value.size}")
            object.__setattr__(self, name, value)
        if self.errors[-1] != 0 or self.choice_schemes[-1] != DENSE:
            raise ValueError(f"layer {self.name}: the last choice must be the dense layer (error 0)")
        unknown = set(self.choice_schemes[:-1].tolist()) - {TUCKER2, *RANKED_SCHEMES}
        if unknown:
            raise ValueError(f"layer {self.name}: unknown choice schemes {sorted(unknown)}")
        ranked = np.isin(self.choice_schemes[:-1], RANKED_SCHEMES)
        if np.any(self.choice_ranks[:-1][ranked] < 1):
            raise ValueError(f"layer {self.name}: a ranked choice needs a rank >= 1")
        if n > 1 and (np.any(self.choice_compute[1:-1] < self.choice_compute[0])
                      or np.any(self.choice_params[1:-1] < self.choice_params[0])):
            raise ValueError(f"layer {self.name}: choice 1 must be the cheapest factored choice in both costs")

    @property
    def break_even_rank(self) -> int:
        return self.max_rank

    def cost(self, rank: int) -> tuple[float, float]:
        if not 1 <= rank <= self.max_rank:
            raise ValueError(f"layer {self.name}: choice must be in 1..{self.max_rank}, got {rank}")
        return float(self.choice_compute[rank - 1]), float(self.choice_params[rank - 1])

    def energy(self, rank: int) -> float:
        """1 - error / ||W||^2: the share of the kernel's energy the choice keeps."""
        if self.weight_energy <= 0:
            return 1.0
        return float(1.0 - self.errors[rank - 1] / self.weight_energy)

    @property
    def relative_errors(self) -> np.ndarray:
        """errors / ||W||_F^2 of every choice (all 0 for a zero kernel)."""
        if self.weight_energy <= 0:
            return np.zeros(self.max_rank)
        return self.errors.astype(np.float64) / self.weight_energy

    @property
    def mixed(self) -> bool:
        """True when some choice is not a Tucker-2 pair (scheme auto)."""
        return bool(np.any(self.choice_schemes[:-1] != TUCKER2))

    def pair(self, rank: int) -> tuple[int, int]:
        """(r1, r2) of choice `rank` (the dense layer's is (c, f); (0, 0) for a choice that is no Tucker-2 pair)."""
        return int(self.r1s[rank - 1]), int(self.r2s[rank - 1])

    def choice_of(self, r1: int, r2: int) -> int:
        """The choice number of the Tucker-2 pair (r1, r2), or the dense layer's when it is not a choice."""
        hit = np.flatnonzero((self.r1s[:-1] == r1) & (self.r2s[:-1] == r2) & (self.choice_schemes[:-1] == TUCKER2))
        return int(hit[0]) + 1 if hit.size else self.max_rank

    def scheme(self, rank: int) -> str:
        """The scheme of choice `rank` ("dense" for the last)."""
        return str(self.choice_schemes[rank - 1])

    def rank_entry(self, rank: int) -> int | list[int] | None:
        """What builds choice `rank` under its scheme: [r1, r2] (tucker2), the rank (spatial, channel, cp,
        linear), or None (the dense layer)."""
        scheme = self.scheme(rank)
        if scheme == DENSE:
            return None
        if scheme == TUCKER2:
            return list(self.pair(rank))
        return int(self.choice_ranks[rank - 1])


def pareto_front(compute, params, errors) -> np.ndarray:
    """Indices of the points that no other point dominates in (compute, params, error), ordered by compute,
    then params, then error. a dominates b when it is no worse in all three and better in one; of identical
    points the first (lowest index) is kept. O(n * frontier size)."""
    compute, params, errors = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (compute, params, errors))
    order = np.lexsort((np.arange(compute.size), errors, params, compute))
    kept: list[int] = []
    kept_p, kept_e = np.empty(compute.size), np.empty(compute.size)
    for i in order:  # every earlier point costs no more compute (nor params when compute ties)
        n = len(kept)
        if n and np.any((kept_p[:n] <= params[i]) & (kept_e[:n] <= errors[i])):
            continue
        kept_p[n], kept_e[n] = params[i], errors[i]
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)


@dataclass(frozen=True)
class LayerOptions:
    """A layer's options as the choice-based selectors see them (last: the unfactored layer, or an SVD
    layer's full rank when it is factored at every rank).

    ids: what RankSelection.ranks holds for each (a ChoiceLayer's choice number, an SVD layer's rank);
    compute / params: exact costs; errors: relative squared errors ||W - W_hat||_F^2 / ||W||_F^2."""

    ids: np.ndarray
    compute: np.ndarray
    params: np.ndarray
    errors: np.ndarray

    @property
    def energy(self) -> np.ndarray:
        """1 - errors: the share of ||W||_F^2 each option keeps."""
        return 1.0 - self.errors


def layer_options(layer: LayerSpectrum) -> LayerOptions:
    """A ChoiceLayer's choices, or an SVD layer's knapsack candidates (`layer_candidates`: ranks 1..b-1
    and the unfactored layer) with their dropped spectral energy over the total."""
    if isinstance(layer, ChoiceLayer):
        return LayerOptions(np.arange(1, layer.max_rank + 1, dtype=np.int64), layer.choice_compute.astype(np.float64),
                            layer.choice_params.astype(np.float64), layer.relative_errors)
    cand = layer_candidates(layer)
    total = float(np.sum(layer.sigma ** 2))
    err = truncation_errors(layer.sigma, cand.ranks, layer.max_rank)
    return LayerOptions(cand.ranks, cand.compute, cand.params, err / total if total > 0 else np.zeros_like(err))


def problem_options(problem: RankProblem) -> list[LayerOptions]:
    return [layer_options(layer) for layer in problem.layers]


def has_choice_layers(problem: RankProblem) -> bool:
    return any(isinstance(layer, ChoiceLayer) for layer in problem.layers)


def normalised_costs(problem: RankProblem, options: list[LayerOptions],
                     weights: tuple[float, float] = (1.0, 1.0)) -> list[np.ndarray]:
    """s = w_C compute / C_0 + w_M params / M_0 of every option, C_0 / M_0 the original compute / params of
    the problem's layers together (one scale for the whole network, as the budgets are)."""
    w_c, w_m = (float(w) for w in weights)
    c0 = sum(layer.original_compute for layer in problem.layers) or 1.0
    m0 = sum(layer.original_params for layer in problem.layers) or 1.0
    return [w_c * o.compute / c0 + w_m * o.params / m0 for o in options]


def choice_report(problem: RankProblem, ranks, options: list[LayerOptions] | None = None) -> dict:
    """Costs of `ranks` against the budgets and their errors, for RankSelection.info (keys as cost_report's)."""
    options = options or problem_options(problem)
    ranks = np.asarray(ranks, dtype=np.int64)
    compute, params = problem.cost(ranks)
    picked = [int(np.flatnonzero(o.ids == r)[0]) for o, r in zip(options, ranks)]
    return {
        "macs": compute, "params": params, "mac_budget": float(problem.compute_budget),
        "compute_unit": problem.compute_unit, "param_budget": float(problem.param_budget),
        "meets_budgets": bool(problem.feasible(ranks)),
        "relative_squared_error_sum": float(sum(o.errors[k] for o, k in zip(options, picked))),
        "factored": [bool(layer.is_factored(int(r))) for layer, r in zip(problem.layers, ranks)],
        "schemes": [layer.scheme(int(r)) if isinstance(layer, ChoiceLayer) else "svd"
                    for layer, r in zip(problem.layers, ranks)],
    }


def _candidates_and_errors(problem: RankProblem) -> tuple[list[LayerCandidates], list[np.ndarray]]:
    """Every layer's knapsack candidates and their squared truncation errors relative to ||W||^2
    (`layer_options`)."""
    options = problem_options(problem)
    return [LayerCandidates(o.ids, o.compute, o.params) for o in options], [o.errors for o in options]


def select_choices_min_error(problem: RankProblem, *, method: str = "pos-cvx", time_limit: float | None = 30.0,
                             mip_rel_gap: float = 1e-6) -> RankSelection:
    """The exact multiple-choice knapsack over every layer's choices (ChoiceLayer) and ranks (SVD layers):

        min  sum_i ||W_i - W_i(choice_i)||_F^2 / ||W_i||_F^2   s.t.  N_C <= N_C,max,  N_M <= N_M,max

    (fixed costs of the other layers included). Each layer's error is normalised by its ||W_i||^2: a conv
    followed by BatchNorm has an arbitrary weight scale, so raw squared errors would let the layers with
    the largest weights decide alone; relative errors compare layers on one scale (as pos-cvx's relative
    energies do). Tucker-2 errors are the HOSVD truncation's (HOOI, which builds the layer, is no worse);
    CP errors are those of the kept terms of the fit (the refit that builds the layer is no worse).
    Returns choice numbers / ranks per layer (ChoiceLayer: 1-based choice numbers)."""
    if not problem.is_satisfiable():
        raise infeasible_error(problem, method)
    candidates, errors = _candidates_and_errors(problem)
    ranks, sol = solve_layers(problem, errors, candidates, maximize=False, time_limit=time_limit,
                              mip_rel_gap=mip_rel_gap)
    compute, params = problem.cost(ranks)
    return RankSelection(method=method, ranks=ranks, info={
        "objective": "sum of per-layer relative squared truncation errors",
        "relative_squared_error_sum": sol.objective, "macs": compute, "compute_unit": problem.compute_unit,
        "params": params, **solver_info(sol), "schemes": choice_report(problem, ranks)["schemes"]})


def _uniform_choice(layer: LayerSpectrum, t: float) -> int:
    """The rank (SVD layer: max(1, floor(t K))) or choice (ChoiceLayer: the pair (floor(t c), floor(t f)),
    each at least 1, or the dense layer when that pair is no choice) of the kept fraction t."""
    if isinstance(layer, ChoiceLayer):
        c, f = layer.pair(layer.max_rank)
        r1 = int(np.clip(np.floor(t * c + 1e-9), 1, c))
        r2 = int(np.clip(np.floor(t * f + 1e-9), 1, f))
        return layer.choice_of(r1, r2)
    return int(np.clip(np.floor(t * layer.max_rank + 1e-9), 1, layer.max_rank))


def has_mixed_layers(problem: RankProblem) -> bool:
    """Whether some layer's choices span several schemes (scheme auto)."""
    return any(isinstance(layer, ChoiceLayer) and layer.mixed for layer in problem.layers)


def select_choices_uniform(problem: RankProblem) -> RankSelection:
    """Scheme tucker2: the same kept fraction t in every layer (r1 / c = r2 / f = t for a ChoiceLayer, r / K = t
    for an SVD layer), t the largest breakpoint (r / c, r / f, r / K) whose model meets both budgets (all are
    tried: with the break-even rule the costs are not monotone in t).

    A problem with mixed choice layers (scheme auto), where a kept fraction of (c, f) names no single choice,
    takes the cost-fraction uniform instead (edgecomp.ranks.baselines.on_choices.select_choices_uniform_cost;
    edgecomp.ranks.baselines.uniform dispatches)."""
    if has_mixed_layers(problem):
        raise ValueError("select_choices_uniform: mixed-scheme choice layers need select_choices_uniform_cost")
    if not problem.is_satisfiable():
        raise infeasible_error(problem, "uniform")
    sizes = set()
    for layer in problem.layers:
        sizes.update(layer.pair(layer.max_rank) if isinstance(layer, ChoiceLayer) else (layer.max_rank,))
    breakpoints = np.unique(np.concatenate([np.arange(1, k + 1) / k for k in sizes]))[::-1]
    for t in breakpoints:
        ranks = np.array([_uniform_choice(layer, float(t)) for layer in problem.layers], dtype=np.int64)
        if problem.feasible(ranks):
            break
    else:
        t, ranks = 0.0, problem.min_ranks
    compute, params = problem.cost(ranks)
    return RankSelection(method="uniform", ranks=ranks, info={
        "alpha": float(t), "n_breakpoints": int(breakpoints.size), "macs": compute,
        "compute_unit": problem.compute_unit, "params": params})
