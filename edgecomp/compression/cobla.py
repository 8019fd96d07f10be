"""COBLA end to end: masked model -> sub-sampled gradient oracle -> SQP (edgecomp.ranks.cobla) -> rounding.

Steps (Li & Shi, ECCV 2018):
 1. relax the masks to [0, 1] and solve eq. 8 by SQP on sub-sampled gradients, warm-started from a
    heuristic's ranks and with the problem shrunk by fixing the masks every heuristic agrees on;
 2. round (eq. 9): r_i from randomized rounding of sum_j m_hat_ij, several seeded draws, each made
    feasible on the model actually built; the draw with the lowest loss on a held-out part of the
    *training* data wins (never the test set);
 3. scale P_j by m_hat_ij and keep the r_i components with the largest m_hat_ij * sigma_ij.

Cost control (CoblaOptions):
 * the SQP stops once the expected ranks s_i = sum_j m_ij have moved by at most
   max(stable_tol, stable_rtol * K_i) per layer for stable_iters iterations in a row
   ("allocation stable", edgecomp.ranks.cobla.sqp); max_iter caps it;
 * rounding evaluates each distinct candidate once. With screen > 0 it scores every candidate on a
   seeded subset of `screen` held-out samples and only the `finalists` best on the rest of the held-out
   set (the subset's loss is reused: the finalists' loss is exactly their loss on the whole held-out set);
 * time_limit_s bounds the whole run (warm start, SQP and rounding). The SQP gets the time up to
   SQP_SHARE of the budget (predictively: it does not start an iteration it expects to finish late),
   rounding the rest; when the budget runs out during rounding the best candidate scored so far is
   returned (the floor rounding, always feasible, if none was). info["time_budget"] records
   {"seconds", "hit", "stage": "sqp" | "rounding" | None (the first stage it cut short), "elapsed_s"}.

Many processes (dist.world_size > 1, edgecomp.distributed): rank 0 runs the warm start, the SQP
and the rounding; the other ranks build the same masked model and oracle and serve its evaluations
(each rank evaluates its share of every sub-sample and of the held-out candidates' evaluations;
edgecomp.compression.oracle). Rank 0 then sends (selection, kept, m_hat) to all ranks, so every rank
builds the identical model. When rank 0 fails outside an evaluation the others raise LeaderFailed
with its exit code.

Device (placement: edgecomp.torch_device.Placement). The masked model (a copy) and, for the
distillation loss, the teacher run on placement.device: every loss and mask gradient of the SQP and
every held-out evaluation of the rounding (edgecomp.compression.oracle). The warm start, the SQP
itself, the rounding's choices and the cost model stay on the CPU in float64; the teacher is moved
back where it was when COBLA returns, and the model that compress() builds afterwards is built on the
CPU. AMP does not apply to the oracle (its docstring says why). placement None: the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from edgecomp.compression.masked import masked_model
from edgecomp.compression.oracle import MaskLossOracle
from edgecomp.distributed import Dist, current
from edgecomp.distributed.channel import abort, exit_code_of
from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.finetune.callables import LossFn
from edgecomp.ranks.problem import RankProblem, RankSelection
from edgecomp.torch_device import moved_to

SHRINK_HEURISTICS = ("uniform", "cptv", "pos-greedy")
SQP_SHARE = 0.85  # of time_limit_s: the SQP's share; rounding at the defaults needs a few percent


@dataclass
class CoblaOptions:
    """COBLA's settings (the defaults were chosen with benchmarks/bench_cobla_speed.py)."""

    max_iter: int = 40  # cap on SQP iterations
    sample: float = 0.05  # fraction of the training data per gradient (or a sample count > 1); 1.0 = full batch
    batch_size: int = 256
    draws: int = 16  # randomized-rounding draws (the floor rounding is always a candidate too)
    warm_start: str | None = "pos-cvx"
    shrink: bool = True
    seed: int = 0
    time_limit_s: float | None = None  # wall-clock budget of the whole COBLA run (SQP + rounding)
    stable_tol: float = 0.5  # "allocation stable": tolerance on each layer's expected rank, in ranks ...
    stable_rtol: float = 0.0  # ... or this fraction of the layer's largest rank, whichever is larger
    stable_iters: int = 3  # ... for this many SQP iterations in a row; 0 turns the rule off
    # ... and (unless None) the held-out loss of the floor rounding's model, on the `screen` subset, has not
    # improved by more than this fraction of its best (one forward pass over the subset per iteration)
    stable_loss_rtol: float | None = None
    screen: int = 500  # held-out samples that score every rounding candidate; 0: score all on the full set
    finalists: int = 3  # candidates scored on the full held-out set after screening

    def __post_init__(self):
        check_time_budget(self.time_limit_s, "the COBLA time budget (time_limit_s)")


def check_time_budget(seconds, name: str) -> float | None:
    """None (no budget) or a positive, finite number of seconds; anything else is the user's mistake."""
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds <= 0):
        raise UserInputError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return None if seconds is None else float(seconds)


def heuristic_masks(problem: RankProblem, ranks: np.ndarray) -> np.ndarray:
    """Masks that keep the first r_i components of each layer."""
    m = np.zeros(problem.n_masks)
    for i, r in enumerate(ranks):
        m[problem.offsets[i] : problem.offsets[i] + int(r)] = 1.0
    return m


def shrink_overshoots(problem: RankProblem, fixed: np.ndarray) -> list[str]:
    """Names of the budgets the relaxed cost with only `fixed`'s on-masks (every free mask at 0) exceeds."""
    A, consts = problem.linear_rows()
    mins = A @ (np.asarray(fixed) == 1).astype(np.float64) + consts
    return [name for (name, _), budget, low in zip(problem.budget_rows(), problem.budgets, mins)
            if low > float(budget) * (1 + 1e-12)]


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
    dist: Dist | None = None,
    placement=None,
) -> tuple[RankSelection, list[np.ndarray], np.ndarray]:
    """Returns (selection, kept component indices per layer, scales per mask (m_hat)).

    loss_fn(model, batch): the user's mean loss of a batch in place of cross-entropy / distillation,
    for the gradients and for picking the rounding draw (edgecomp.compression.oracle).
    callback(record) is the SQP's (edgecomp.ranks.cobla.solve_relaxed).
    dist: the processes sharing the evaluations (default edgecomp.distributed.current(); module docstring);
    every rank calls run_cobla with the same arguments and gets the same result.
    placement: an edgecomp.torch_device.Placement; the oracle's forward and backward passes run on its
    device (module docstring), its amp is not used. None: the CPU."""
    dist = dist or current()
    device = None if placement is None else placement.device
    order = [layer.name for layer in problem.layers]
    masked, masks = masked_model(model, cost, spectra, order)
    if device is not None:
        masked.to(device)  # a copy: the caller's model stays where it is
        masks.value = masks.value.to(device)
    distills = loss_fn is None and not getattr(data, "has_labels", True)  # the oracle's teacher is used
    with moved_to(device if distills else None, teacher):
        oracle = MaskLossOracle(
            masked, masks, data, sample=options.sample, batch_size=options.batch_size, seed=options.seed,
            teacher=teacher, indices=train_idx, loss_fn=loss_fn, dist=dist,
        )
        if dist.active and not dist.is_main:
            return oracle.serve()
        try:
            result = _lead_cobla(problem, oracle, heldout_idx, options, callback)
        except BaseException as exc:
            abort(exit_code_of(exc), dist)  # the other ranks wait for a message: tell them
            raise
        return oracle.finish(result)


def _lead_cobla(problem: RankProblem, oracle: MaskLossOracle, heldout_idx: np.ndarray, options: CoblaOptions,
                callback) -> tuple[RankSelection, list[np.ndarray], np.ndarray]:
    """Warm start, SQP and rounding (rank 0's part of run_cobla; all of it in a single process)."""
    from edgecomp.ranks.baselines import BASELINES
    from edgecomp.ranks.cobla import (
        SQPOptions, heuristic_budgets, kept_components, shrink_from_heuristics, solve_relaxed,
    )

    t_start = time.perf_counter()
    deadline = None if options.time_limit_s is None else t_start + options.time_limit_s
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
            over = shrink_overshoots(problem, fixed)
            if over:
                # A layer every heuristic keeps whole is fixed at all max_rank masks, whose relaxed cost
                # (intercept + slope x max_rank) can far exceed the dense layer's: for latency, a layer never
                # faster factored. The relaxed problem would then be infeasible though the budgets are not.
                info["shrink"] = f"skipped: its fixed masks alone exceed the {', '.join(over)} budget"
                info["fixed_to_one"] = info["fixed_to_zero"] = 0
                fixed = None
    sqp_limit = None
    if deadline is not None:
        sqp_limit = max(1e-9, t_start + SQP_SHARE * options.time_limit_s - time.perf_counter())
    sqp_options = SQPOptions(max_iter=options.max_iter, seed=options.seed, time_limit_s=sqp_limit,
                             stable_tol=options.stable_tol, stable_rtol=options.stable_rtol,
                             stable_iters=options.stable_iters, stable_loss_rtol=options.stable_loss_rtol or 0.0)
    product_loss = None
    if options.stable_iters and options.stable_loss_rtol is not None:
        product_loss = floor_product_loss(problem, oracle, heldout_parts(heldout_idx, options)[0])
    result = solve_relaxed(problem, oracle, m0=m0, options=sqp_options, fixed=fixed, callback=callback,
                           loss_oracle=oracle.loss, product_loss=product_loss)
    m_hat = np.clip(result.masks, 0.0, 1.0)

    t_round = time.perf_counter()
    selection = round_on_heldout(problem, oracle, m_hat, heldout_idx, options, deadline)
    kept = kept_components(problem, m_hat, selection.ranks)
    selection.masks = m_hat
    selection.info.update(info)
    sqp_cut = result.reason == "time limit"
    rounding_cut = bool(selection.info["deadline_hit"])
    selection.info.update(
        sqp_iterations=result.iterations,
        sqp_converged=result.converged,
        sqp_reason=result.reason,
        sqp_loss=result.loss,
        sqp_history=result.history,
        sqp_seconds=result.timings["total_s"],
        rounding_seconds=time.perf_counter() - t_round,
        oracle_seconds=oracle.seconds,
        oracle_calls=oracle.calls,
        sqp_loss_only_calls=result.timings["loss_only_calls"],
        sqp_product_loss_calls=result.timings["product_loss_calls"],
        n_masks=problem.n_masks,
        gradient_samples=oracle.n_sample,
        processes=oracle.dist.world_size,
        time_budget={"seconds": options.time_limit_s, "hit": sqp_cut or rounding_cut,
                     "stage": "sqp" if sqp_cut else "rounding" if rounding_cut else None,
                     "elapsed_s": time.perf_counter() - t_start},
    )
    return selection, kept, m_hat


def floor_product_loss(problem: RankProblem, oracle: MaskLossOracle, indices: np.ndarray):
    """m -> the loss on `indices` of the model built from m's floor rounding (eq. 9 without the random
    draws, made feasible): what the SQP's iterate would be turned into, for the "allocation stable" rule."""
    from edgecomp.ranks.cobla import kept_components, round_ranks

    def product_loss(m: np.ndarray) -> float:
        ranks = round_ranks(problem, m, draws=0).ranks
        built = built_masks(problem, m, ranks, kept_components(problem, m, ranks))
        return oracle.evaluate(built, indices, grad=False)[0]

    return product_loss


def heldout_parts(heldout_idx: np.ndarray, options: CoblaOptions) -> tuple[np.ndarray, np.ndarray]:
    """(screening subset, the rest) of the held-out indices: a seeded choice of `options.screen` of them, or
    (all, none) when screen is 0 or not smaller than the held-out set."""
    heldout_idx = np.asarray(heldout_idx)
    n = len(heldout_idx)
    if not 0 < options.screen < n:
        return heldout_idx, heldout_idx[:0]
    part = np.zeros(n, dtype=bool)
    part[np.random.default_rng([options.seed, 11]).choice(n, options.screen, replace=False)] = True
    return heldout_idx[part], heldout_idx[~part]


def round_on_heldout(problem: RankProblem, oracle: MaskLossOracle, m_hat: np.ndarray, heldout_idx: np.ndarray,
                     options: CoblaOptions, deadline: float | None = None) -> RankSelection:
    """Eq. 9 rounding of m_hat, each distinct candidate scored by its loss on the held-out indices (of the
    built model: built_masks), screened on a seeded subset of `options.screen` of them first (see module
    docstring); no evaluation starts after `deadline` (time.perf_counter())."""
    from edgecomp.ranks.cobla import kept_components, round_ranks

    screen_idx, rest_idx = heldout_parts(heldout_idx, options)
    n = len(screen_idx) + len(rest_idx)
    screened: dict[tuple, float] = {}

    def loss_on(ranks: np.ndarray, idx: np.ndarray) -> float:
        kept = kept_components(problem, m_hat, ranks)
        return oracle.evaluate(built_masks(problem, m_hat, ranks, kept), idx, grad=False)[0]

    def screen_loss(ranks: np.ndarray) -> float:
        key = tuple(ranks.tolist())
        if key not in screened:
            screened[key] = loss_on(ranks, screen_idx)
        return screened[key]

    def heldout_loss(ranks: np.ndarray) -> float:  # the mean over all held-out samples, the subset's part reused
        first = screen_loss(ranks)
        if not len(rest_idx):
            return first
        return (len(screen_idx) * first + len(rest_idx) * loss_on(ranks, rest_idx)) / n

    return round_ranks(problem, m_hat, draws=options.draws, seed=options.seed, loss_fn=heldout_loss,
                       screen_fn=screen_loss if len(rest_idx) else None, finalists=options.finalists,
                       deadline=deadline)
