"""From relaxed masks m_hat to integer ranks that fit every budget on the built model (COBLA eq. 9):
compute, params and the problem's extra budgets (RankProblem.extra, e.g. latency), all alike below.

Rank of layer i (eq. 9, randomized rounding of the expected number of kept components):

    s_i = sum_j m_hat_ij,   r_i = floor(s_i) + Bernoulli(s_i - floor(s_i)),   clipped to [1, K_i].

Which components are kept: COBLA's second step rescales each component by its mask
(P_j <- m_hat_ij P_j) and re-factorises; with orthonormal singular vectors the new singular
values are m_hat_ij * sigma_ij, so keeping the top r_i of the rescaled layer means keeping the
r_i components with the largest m_hat_ij * sigma_ij (`kept_components`; the glue applies the
scaling). The reference implementation does the same ("add_and_svd" rounding: ten random draws,
infeasible draws rejected, best held-out accuracy kept).

Candidates and budgets. Budgets must hold EXACTLY on the built model (`RankProblem.feasible`,
break-even rule applied), not just for the linear relaxation:

* Break-even: a layer whose rank reaches its break-even rank b_i is left unfactored and costs
  its original MACs/params. That is never more than the linear cost in the metric that set
  b_i, but can be more in the other one (e.g. MAC break-even at rank 10 while the factored
  layer at rank 10 still has fewer parameters than the original). When a candidate is over
  budget and has such layers, they are lowered to b_i - 1 (factored, strictly cheaper than the
  original in both metrics) one at a time, cheapest loss of kept energy per unit of removed
  excess first, until the candidate fits or none is left.
* Random draws: `draws` feasible draws are wanted, from at most 4 * draws seeded attempts; a
  draw still over budget after the break-even lowering is rejected.
* Floor: r_i = max(1, floor(s_i)) is always a candidate. Its linear cost is within the relaxed
  budgets except where the clip to rank 1 or the break-even rule adds cost; it is repaired by
  greedily lowering layers (break-even layers to b_i - 1, others by one rank), always choosing
  the move that loses the least kept energy per unit of removed excess. This terminates
  feasible whenever the all-rank-1 model fits (checked first: InfeasibleBudgetError otherwise),
  so rounding always returns a feasible selection.

Choice among the distinct feasible candidates (draws that repeat a rank vector already drawn are
counted in info["draws_duplicate"] and never evaluated twice): the smallest loss_fn(ranks) if
given (the glue evaluates held-out loss, on the run's torch device: edgecomp.compression.cobla;
this module stays numpy on the CPU), else the largest kept energy

    sum_i  kept_i / sum_j sigma_ij^2,   kept_i = sum_{j in top r_i} (m_hat_ij sigma_ij)^2

(1 for a layer left unfactored, whose original weights are kept), i.e. the relative spectral
energy of the rescaled layers that the built model retains. Ties go to the larger kept energy.

Screening (loss_fn and screen_fn given, more than `finalists` distinct candidates): every
candidate is first scored by screen_fn (a cheaper estimate of the same loss, e.g. on a subset of
the held-out data), and only the `finalists` best by that score are scored by loss_fn; the choice
is among them. The floor candidate is scored first in every stage.

Deadline (a time.perf_counter() value): no evaluation starts after it. When it cuts the scoring
short the choice is made by the last stage that scored at least one candidate (the finalists'
loss_fn, else the screening score), else the floor candidate (feasible, never evaluated) is
returned; info["deadline_hit"] says so. A deadline can be overrun by one evaluation.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgecomp.errors import InfeasibleBudgetError
from edgecomp.ranks.problem import RankProblem, RankSelection, infeasible_budget_error


def _check_masks(problem: RankProblem, masks) -> np.ndarray:
    masks = np.asarray(masks, dtype=np.float64).reshape(-1)
    if masks.shape != (problem.n_masks,):
        raise ValueError(f"masks must have {problem.n_masks} entries, got {masks.size}")
    if not np.all(np.isfinite(masks)):
        raise ValueError("masks must be finite")
    if masks.min() < -1e-6 or masks.max() > 1 + 1e-6:
        raise ValueError("masks must lie in [0, 1]")
    return np.clip(masks, 0.0, 1.0)


def _order(problem: RankProblem, masks: np.ndarray) -> list[np.ndarray]:
    """Per layer: component indices by decreasing m_hat * sigma (stable: ties keep index order)."""
    return [np.argsort(-(m * layer.sigma), kind="stable")
            for layer, m in zip(problem.layers, problem.split(masks))]


def kept_components(problem: RankProblem, masks, ranks) -> list[np.ndarray]:
    """Indices of the ranks[i] components of layer i with the largest m_hat_ij * sigma_ij.

    Sorted by decreasing m_hat_ij * sigma_ij (ties by index). For a rank at or above the layer's
    break-even rank the layer is built unfactored; its list is still returned for completeness.
    """
    masks = _check_masks(problem, masks)
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.shape != (len(problem.layers),):
        raise ValueError(f"expected {len(problem.layers)} ranks, got shape {ranks.shape}")
    out = []
    for layer, order, r in zip(problem.layers, _order(problem, masks), ranks):
        if not 1 <= r <= layer.max_rank:
            raise ValueError(f"layer {layer.name}: rank {r} outside [1, {layer.max_rank}]")
        out.append(order[:r].copy())
    return out


class _Ledger:
    """Vectorised per-layer costs (one row per budget) and kept energies for fast greedy moves."""

    def __init__(self, problem: RankProblem, masks: np.ndarray):
        layers = problem.layers
        self.problem = problem
        self.K = np.array([l.max_rank for l in layers], dtype=np.int64)
        self.be = np.array([l.break_even_rank for l in layers], dtype=np.int64)
        extra = problem.extra
        self.per_rank = np.array([[l.compute_per_rank for l in layers], [l.params_per_rank for l in layers],
                                  *(b.per_rank for b in extra)]).reshape(2 + len(extra), len(layers))
        self.intercept = np.array([[l.compute_intercept for l in layers], [l.bias_params for l in layers],
                                   *(b.intercept for b in extra)]).reshape(self.per_rank.shape)
        self.original = np.array([[l.original_compute for l in layers], [l.original_params for l in layers],
                                  *(b.original for b in extra)]).reshape(self.per_rank.shape)
        self.fixed = np.array([problem.fixed_compute, problem.fixed_params, *(b.fixed for b in extra)])
        self.energy = []  # energy[i][r]: relative kept energy of layer i at rank r (factored)
        for layer, m, order in zip(layers, problem.split(masks), _order(problem, masks)):
            total = float(np.sum(layer.sigma**2))
            v = ((m * layer.sigma)[order]) ** 2
            e = np.concatenate([[0.0], np.cumsum(v)]) / total if total > 0 else np.zeros(v.size + 1)
            self.energy.append(e)

    def costs(self, ranks: np.ndarray) -> np.ndarray:
        """Per-layer cost of every row (rows x layers), break-even rule applied."""
        return np.where(ranks >= self.be, self.original, ranks * self.per_rank + self.intercept)

    def totals(self, ranks) -> np.ndarray:
        costs = self.costs(ranks)
        return np.array([self.fixed[k] + float(costs[k].sum()) for k in range(costs.shape[0])])

    def layer_energy(self, i: int, r: int) -> float:
        return 1.0 if r >= self.be[i] else float(self.energy[i][r])

    def kept_energy(self, ranks) -> float:
        return float(sum(self.layer_energy(i, int(r)) for i, r in enumerate(ranks)))

    def lower(self, ranks: np.ndarray, *, break_even_only: bool) -> np.ndarray | None:
        """Greedily lower layers until the built model fits; None if no move is left."""
        ranks = ranks.copy()
        p = self.problem
        budgets = p.budgets
        while not p.feasible(ranks):
            over = self.totals(ranks) >= budgets * (1 - 1e-9)
            if not over.any():  # disagreement at rounding level: treat every row as tight
                over[:] = True
            unf = ranks >= self.be
            new = np.where(unf, self.be - 1, ranks - 1)
            movable = (new >= 1) & (unf if break_even_only else (ranks > 1))
            if not movable.any():
                return None
            costs, new_costs = self.costs(ranks), self.costs(np.maximum(new, 1))
            gain = 0.0
            for k in np.flatnonzero(over):  # removed excess, relative to each exceeded budget
                gain = gain + (costs[k] - new_costs[k]) / budgets[k]
            idx = np.flatnonzero(movable & (gain > 0))
            if idx.size == 0:
                return None
            lost = np.array([self.layer_energy(i, int(ranks[i])) - self.layer_energy(i, int(new[i])) for i in idx])
            pick = idx[np.lexsort((-gain[idx], lost / gain[idx]))[0]]
            ranks[pick] = new[pick]
        return ranks


def round_ranks(
    problem: RankProblem,
    masks,
    *,
    draws: int = 16,
    seed: int = 0,
    loss_fn: Callable[[np.ndarray], float] | None = None,
    screen_fn: Callable[[np.ndarray], float] | None = None,
    finalists: int = 3,
    deadline: float | None = None,
) -> RankSelection:
    """Integer ranks from relaxed masks (eq. 9), feasible on the built model; see module docstring."""
    if draws < 0:
        raise ValueError("draws must be >= 0")
    if finalists < 1:
        raise ValueError("finalists must be >= 1")
    masks = _check_masks(problem, masks)
    if not problem.is_satisfiable():
        raise infeasible_budget_error(problem, "no rank assignment fits: the smallest buildable model (rank 1 "
                                               "everywhere)")
    ledger = _Ledger(problem, masks)
    s = np.array([float(m.sum()) for m in problem.split(masks)])
    base = np.floor(s + 1e-9)
    frac = np.clip(s - base, 0.0, 1.0)

    candidates: dict[tuple, str] = {}
    floor = np.clip(base.astype(np.int64), 1, ledger.K)
    repaired = ledger.lower(floor, break_even_only=False)
    if repaired is None:  # unreachable while the rank-1 model fits; kept as a hard guard
        raise InfeasibleBudgetError("could not repair the floor rounding to fit the budgets")
    candidates[tuple(repaired.tolist())] = "floor" if np.array_equal(repaired, floor) else "floor (repaired)"

    rng = np.random.default_rng(seed)
    attempts = feasible_draws = 0
    while feasible_draws < draws and attempts < 4 * draws:
        attempts += 1
        r = np.clip((base + (rng.random(s.size) < frac)).astype(np.int64), 1, ledger.K)
        r = ledger.lower(r, break_even_only=True)
        if r is None:
            continue
        feasible_draws += 1
        candidates.setdefault(tuple(r.tolist()), f"draw {attempts}")

    keys = list(candidates)
    energies = [ledger.kept_energy(np.array(key)) for key in keys]
    scoring = _score(keys, energies, loss_fn, screen_fn, finalists, deadline)
    best = scoring["best"]
    ranks = np.array(keys[best], dtype=np.int64)
    n_c, n_m = problem.cost(ranks)
    records = []
    for i, k in enumerate(keys):
        row = {"ranks": list(k), "source": candidates[k], "kept_energy": energies[i]}
        for name in ("screen_loss", "loss"):
            if i in scoring[name]:
                row[name] = scoring[name][i]
        records.append(row)
    info = {
        "criterion": scoring["criterion"],
        "chosen": candidates[keys[best]],
        "expected_ranks": s.tolist(),
        "candidates": records,
        "draws_attempted": attempts,
        "draws_feasible": feasible_draws,
        "draws_duplicate": feasible_draws + 1 - len(keys),  # feasible draws (+ the floor) repeating a candidate
        "candidates_distinct": len(keys),
        "candidates_screened": len(scoring["screen_loss"]),
        "candidates_full_loss": len(scoring["loss"]),
        "deadline_hit": scoring["deadline_hit"],
        "seed": seed,
        "macs": n_c,  # report.json's key for the compute cost, in "compute_unit"
        "compute_unit": problem.compute_unit,
        "params": n_m,
        **({"extra_costs": dict(zip((b.name for b in problem.extra), problem.extra_cost(ranks).tolist()))}
           if problem.extra else {}),
        "unfactored_layers": [l.name for l, r in zip(problem.layers, ranks) if not l.is_factored(int(r))],
    }
    return RankSelection(method="cobla", ranks=ranks, masks=masks, enforces_budgets=True, info=info)


def _score(keys: list, energies: list[float], loss_fn, screen_fn, finalists: int, deadline: float | None) -> dict:
    """Pick the winner among the candidates `keys` (index 0: the floor); see the module docstring."""
    out: dict = {"screen_loss": {}, "loss": {}, "deadline_hit": False}
    if loss_fn is None:
        out.update(best=max(range(len(keys)), key=lambda i: energies[i]), criterion="kept_energy")
        return out

    def run_stage(fn, order: list[int], into: dict) -> None:
        for i in order:
            if deadline is not None and time.perf_counter() >= deadline:
                out["deadline_hit"] = True
                return
            into[i] = float(fn(np.array(keys[i], dtype=np.int64)))

    def winner(scores: dict) -> int | None:
        finite = [i for i, v in scores.items() if np.isfinite(v)]
        return min(finite, key=lambda i: (scores[i], -energies[i])) if finite else None

    order = list(range(len(keys)))
    if screen_fn is not None and len(keys) > finalists:
        run_stage(screen_fn, order, out["screen_loss"])
        ranked = sorted((i for i, v in out["screen_loss"].items() if np.isfinite(v)),
                        key=lambda i: (out["screen_loss"][i], -energies[i]))
        order = ranked[:finalists]
    if not out["deadline_hit"]:
        run_stage(loss_fn, order, out["loss"])
    for criterion, scores in (("loss", out["loss"]), ("screen_loss", out["screen_loss"])):
        best = winner(scores)
        if best is not None:
            out.update(best=best, criterion=criterion)
            return out
    if not out["deadline_hit"]:
        raise ValueError("loss_fn returned no finite loss for any candidate")
    out.update(best=0, criterion="deadline (floor, not evaluated)")
    return out
