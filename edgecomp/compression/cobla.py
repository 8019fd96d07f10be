"""COBLA end to end: masked model -> sub-sampled gradient oracle -> SQP (edgecomp.ranks.cobla) -> rounding.

Steps (Li & Shi, ECCV 2018):
 1. relax the masks to [0, 1] and solve eq. 8 by SQP on sub-sampled gradients, warm-started from a
    heuristic's ranks and with the problem shrunk by fixing the masks every heuristic agrees on;
 2. round (eq. 9): r_i from randomized rounding of sum_j m_hat_ij, several seeded draws, each made
    feasible on the model actually built; the draw with the lowest loss on a held-out part of the
    *training* data wins (never the test set);
 3. scale P_j by m_hat_ij and keep the r_i components with the largest m_hat_ij * sigma_ij.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from edgecomp.compression.masked import masked_model
from edgecomp.compression.oracle import MaskLossOracle
from edgecomp.errors import EdgecompError
from edgecomp.finetune.callables import LossFn
from edgecomp.ranks.problem import RankProblem, RankSelection

SHRINK_HEURISTICS = ("uniform", "cptv", "pos-greedy")


@dataclass
class CoblaOptions:
    max_iter: int = 40
    sample: float = 0.05  # fraction of the training data per gradient (or a sample count > 1); 1.0 = full batch
    batch_size: int = 256
    draws: int = 16
    warm_start: str | None = "pos-cvx"
    shrink: bool = True
    seed: int = 0
    time_limit_s: float | None = None


def heuristic_masks(problem: RankProblem, ranks: np.ndarray) -> np.ndarray:
    """Masks that keep the first r_i components of each layer."""
    m = np.zeros(problem.n_masks)
    for i, r in enumerate(ranks):
        m[problem.offsets[i] : problem.offsets[i] + int(r)] = 1.0
    return m


def _heuristic_ranks(scaled: RankProblem) -> list[np.ndarray]:
    from edgecomp.ranks.baselines import BASELINES

    out = []
    for name in SHRINK_HEURISTICS:
        try:
            out.append(BASELINES[name](scaled).ranks)
        except EdgecompError:
            continue  # this heuristic cannot meet the scaled budget: it has no say
    return out


def built_masks(problem: RankProblem, m_hat: np.ndarray, ranks: np.ndarray, kept: list[np.ndarray]) -> np.ndarray:
    """Mask vector whose masked model computes exactly the model that will be built."""
    m = np.zeros(problem.n_masks)
    for i, layer in enumerate(problem.layers):
        lo = problem.offsets[i]
        if not layer.is_factored(int(ranks[i])):
            m[lo : lo + layer.max_rank] = 1.0  # left unfactored: the original weights
        else:
            m[lo + kept[i]] = m_hat[lo + kept[i]]
    return m


def run_cobla(
    problem: RankProblem,
    model: nn.Module,
    cost,
    spectra: dict,
    data,
    *,
    train_idx: np.ndarray,
    heldout_idx: np.ndarray,
    teacher: nn.Module | None,
    options: CoblaOptions,
    callback=None,
    loss_fn: LossFn | None = None,
) -> tuple[RankSelection, list[np.ndarray], np.ndarray]:
    """Returns (selection, kept component indices per layer, scales per mask (m_hat)).

    loss_fn(model, batch): the user's mean loss of a batch in place of cross-entropy / distillation,
    for the gradients and for picking the rounding draw (edgecomp.compression.oracle)."""
    from edgecomp.ranks.baselines import BASELINES
    from edgecomp.ranks.cobla import (
        SQPOptions, heuristic_budgets, kept_components, round_ranks, shrink_from_heuristics, solve_relaxed,
    )

    order = [layer.name for layer in problem.layers]
    masked, masks = masked_model(model, cost, spectra, order)
    oracle = MaskLossOracle(
        masked, masks, data, sample=options.sample, batch_size=options.batch_size, seed=options.seed,
        teacher=teacher, indices=train_idx, loss_fn=loss_fn,
    )
    info: dict = {}
    m0 = None
    if options.warm_start:
        try:
            m0 = heuristic_masks(problem, BASELINES[options.warm_start](problem).ranks)
            info["warm_start"] = options.warm_start
        except EdgecompError as exc:
            info["warm_start"] = f"none ({exc})"
    fixed = None
    if options.shrink:
        # The reference implementation's budgets: reductions x1.8 (stricter) and x0.2 (looser).
        strict_problem, loose_problem = heuristic_budgets(problem)
        strict, loose = _heuristic_ranks(strict_problem), _heuristic_ranks(loose_problem)
        if strict and loose:
            fixed = shrink_from_heuristics(problem, strict, loose)
            info["fixed_to_one"] = int((fixed == 1).sum())
            info["fixed_to_zero"] = int((fixed == 0).sum())
    sqp_options = SQPOptions(max_iter=options.max_iter, seed=options.seed, time_limit_s=options.time_limit_s)
    result = solve_relaxed(problem, oracle, m0=m0, options=sqp_options, fixed=fixed, callback=callback)
    m_hat = np.clip(result.masks, 0.0, 1.0)

    def heldout_loss(ranks: np.ndarray) -> float:
        kept = kept_components(problem, m_hat, ranks)
        return oracle.evaluate(built_masks(problem, m_hat, ranks, kept), heldout_idx, grad=False)[0]

    selection = round_ranks(problem, m_hat, draws=options.draws, seed=options.seed, loss_fn=heldout_loss)
    kept = kept_components(problem, m_hat, selection.ranks)
    selection.masks = m_hat
    selection.info.update(info)
    selection.info.update(
        sqp_iterations=result.iterations,
        sqp_converged=result.converged,
        sqp_reason=result.reason,
        sqp_loss=result.loss,
        sqp_history=result.history,
        oracle_seconds=oracle.seconds,
        oracle_calls=oracle.calls,
        n_masks=problem.n_masks,
        gradient_samples=oracle.n_sample,
    )
    return selection, kept, m_hat
