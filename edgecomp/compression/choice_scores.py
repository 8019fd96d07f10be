"""COBLA over choice layers (schemes tucker2 and auto): the exact knapsack over data-scored choices.

Each layer i offers choices c (edgecomp.ranks.choices.ChoiceLayer: (r1, r2) pairs with exact costs, the
dense layer last; an SVD layer offers ranks). Replacing W_i by W_hat_ic raises the training loss by, to
second order around the trained weights (Optimal Brain Damage's diagonal approximation),

    E_ic ~= 1/2 sum F_i * (W_i - W_hat_ic)^2                (elementwise, summed over the kernel)

with F_i the diagonal of the empirical Fisher of the loss with respect to W_i, estimated on COBLA's
sub-sample of the training data (default 5%): F = B * mean_b (g_b)^2 over mini-batches b of size B, g_b
the gradient of the batch's mean loss (`fisher_diagonal`). With labels the loss is cross-entropy. Without
labels it is COBLA's distillation from the original model (edgecomp.compression.oracle); its gradient at
the original weights is exactly 0 (the model is its teacher), but its Hessian there is the model's Fisher
information, estimated with labels drawn from the model's own softmax (seeded): cross-entropy on sampled
labels. Because such per-sample gradients have mean 0, B * g_b^2 is unbiased for the per-sample Fisher,
so E_ic is in loss units (a predicted increase of the mean loss). W_hat_ic is the HOSVD truncation at the
pair (whose squared error the ChoiceLayer holds; HOOI builds the layer and is no worse in Frobenius norm),
under scheme auto also a spatial / channel choice's truncated SVD unmat(P_r V_r^T) or a cp choice's r
largest-weight CP terms (the build refits them, no worse), or the truncated SVD P_r V_r^T of an SVD layer;
the dense choice scores 0. Cross-layer and
off-diagonal curvature are ignored, as in OBD.

The choice per layer is then the exact multiple-choice knapsack (edgecomp.ranks.knapsack.solve_layers)

    min sum_i E_i,c_i   s.t.  N_C <= N_C,max,  N_M <= N_M,max.

Why this and not COBLA's relaxed masks with a tied r1 / r2 ratio: COBLA's SQP needs costs linear in the
masks, but a Tucker-2 layer costs c r1 HW + r1 r2 kh kw H'W' + r2 f H'W', bilinear in (r1, r2); masks on
r1 and r2 would need either a linearization of that product around the current point or one tied ratio
r1 / c = r2 / f (one degree of freedom per layer, a restriction the knapsack does not have). The knapsack
over scored choices keeps every Pareto pair, the exact bilinear costs and exact budgets, and puts the data
into the objective (the loss estimate) instead of into a relaxation. No rounding step is needed.
"""

from __future__ import annotations

import time
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecomp.compression.choice_candidates import ReconstructFn, batch_of, pick_by_heldout_loss
from edgecomp.compression.oracle import batch_to
from edgecomp.errors import UserInputError
from edgecomp.finetune.callables import LossFn, check_callable
from edgecomp.ranks.choices import ChoiceLayer
from edgecomp.ranks.knapsack import (LayerCandidates, infeasible_error, layer_candidates, solve_layers, solver_info,
                                     truncation_errors)
from edgecomp.ranks.problem import RankProblem, RankSelection
from edgecomp.torch_device import moved_to



def sample_indices(pool: np.ndarray, sample: float | int, seed: int) -> np.ndarray:
    """COBLA's sub-sample: a fraction (0, 1] of `pool` or a count (> 1), seeded, sorted."""
    n = len(pool)
    k = n if sample == 1.0 else int(min(n, max(1, round(sample * n) if sample < 1 else sample)))
    if k == n:
        return np.asarray(pool)
    return np.sort(np.random.default_rng([seed, 0]).choice(pool, k, replace=False))


def fisher_diagonal(model: nn.Module, names: list[str], data, indices: np.ndarray, *, batch_size: int = 32,
                    seed: int = 0, loss_fn: LossFn | None = None) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher F = B * mean_b (dL_b/dW)^2 of each named layer's weight (float64, on the CPU),
    over mini-batches of `indices` (module docstring). The model runs in eval mode and is not modified.
    It runs on the device of the model's weights (each batch is moved there; select_choices_by_scores
    places the model); the sampled labels are drawn on the CPU, so they do not depend on the device.
    Loss: loss_fn(model, batch) when given, cross-entropy with the labels when the data has them, else
    cross-entropy with labels sampled from the model's own softmax (seeded)."""
    check_callable(loss_fn, "loss_fn")
    if batch_size < 1 or len(indices) == 0:
        raise UserInputError("the Fisher estimate needs batch_size >= 1 and a non-empty sample")
    labels = bool(getattr(data, "has_labels", True))
    weights = [model.get_submodule(name).weight for name in names]
    device = weights[0].device
    sums = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = batch_of(data, chunk)
            if loss_fn is not None:
                loss = loss_fn(model, batch_to(batch, device))
            else:
                x, y = batch
                logits = model(x.to(device))
                if not labels:
                    probs = F.softmax(logits.detach().double().cpu(), dim=1)
                    y = torch.multinomial(probs, 1, generator=generator).reshape(-1)
                loss = F.cross_entropy(logits, y.to(device))
            grads = torch.autograd.grad(loss.reshape(()), weights, allow_unused=True)
            for total, g in zip(sums, grads):
                if g is not None:
                    total.add_(g.detach().double() ** 2, alpha=float(len(chunk)))
            batches += 1
    finally:
        model.train(was_training)
    return {name: (total / batches).cpu() for name, total in zip(names, sums)}


def _choices_of(layer: ChoiceLayer, scheme: str) -> np.ndarray:
    """The (1-based) numbers of `layer`'s factored choices of `scheme`."""
    return np.flatnonzero(layer.choice_schemes[:-1] == scheme) + 1


def tucker2_reconstructions(name: str, kernel: np.ndarray, layer: ChoiceLayer) -> Iterator[tuple[int, np.ndarray]]:
    """(choice number, W_hat) for every Tucker-2 choice of `layer`: the HOSVD truncation
    W x_0 P_f(r2) x_1 P_c(r1), P = projectors on the leading left singular vectors of the unfoldings
    (edgecomp.factor.tucker.tucker2_hosvd at full ranks gives the complete bases, leading ones first).
    Grouped by r1 (each mode-1 projection Y is formed once) and, within a group, by increasing r2, so that
    W_hat(r2) = sum_{a < r2} u_a (u_a^T Y) grows by the newly added directions only."""
    from edgecomp.factor.tucker import tucker2_hosvd

    factored = _choices_of(layer, "tucker2")
    if factored.size == 0:
        return
    f, c, kh, kw = kernel.shape
    full = tucker2_hosvd(kernel, c, f)
    u_f, u_c = full.U_out, full.U_in
    w = kernel.reshape(f, c, kh * kw)
    r1s = layer.r1s[factored - 1]
    for r1 in np.unique(r1s):
        proj = u_c[:, :r1] @ u_c[:, :r1].T
        z = u_f.T @ np.einsum("fck,cd->fdk", w, proj, optimize=True).reshape(f, -1)  # U_f^T (W x_1 P_c(r1))
        group = factored[r1s == r1]
        w_hat, done = np.zeros((f, z.shape[1])), 0
        for k in group[np.argsort(layer.r2s[group - 1], kind="stable")]:
            r2 = int(layer.r2s[k - 1])
            w_hat += u_f[:, done:r2] @ z[done:r2]
            done = r2
            yield int(k), w_hat.reshape(kernel.shape)  # valid until the next one is drawn


def _ranked_reconstructions(kernel: np.ndarray, layer: ChoiceLayer, scheme: str, spectrum
                            ) -> Iterator[tuple[int, np.ndarray]]:
    """(choice number, W_hat) for `layer`'s choices of one ranked scheme, by increasing rank r:
    spatial / channel: unmat(P_r V_r^T) of the SVD; cp: the r largest-weight terms of the CP fit (what
    edgecomp.compression.problem.auto_choices scores by its error). Each W_hat grows by the added terms."""
    from edgecomp.factor import unmatricize

    numbers = _choices_of(layer, scheme)
    if numbers.size == 0:
        return
    numbers = numbers[np.argsort(layer.choice_ranks[numbers - 1], kind="stable")]
    w_hat, done = np.zeros(kernel.shape), 0
    if scheme == "cp":
        fit = spectrum.cp
        order = np.argsort(-np.asarray(fit.weights, dtype=np.float64), kind="stable")
        weights = np.asarray(fit.weights, dtype=np.float64)[order]
        factors = [np.asarray(a, dtype=np.float64)[:, order] for a in fit.factors]
        for k in numbers:
            for j in range(done, int(layer.choice_ranks[k - 1])):
                w_hat += weights[j] * np.einsum("i,j,k,l->ijkl", *(a[:, j] for a in factors))
            done = int(layer.choice_ranks[k - 1])
            yield int(k), w_hat
        return
    p, v = spectrum.P.double().numpy(), spectrum.V.double().numpy()
    matrix = np.zeros((p.shape[0], v.shape[0]))
    for k in numbers:
        r = int(layer.choice_ranks[k - 1])
        matrix += p[:, done:r] @ v[:, done:r].T
        done = r
        yield int(k), unmatricize(torch.as_tensor(matrix), scheme, kernel.shape).numpy()


def auto_reconstructions(spectra: Mapping) -> ReconstructFn:
    """The ReconstructFn of scheme auto: every factored choice of a mixed layer, whatever its scheme (Tucker-2
    pairs by `tucker2_reconstructions`, spatial / channel / cp ranks by `_ranked_reconstructions` from the
    layer's auto Spectrum parts in `spectra`)."""

    def reconstruct(name: str, kernel: np.ndarray, layer: ChoiceLayer) -> Iterator[tuple[int, np.ndarray]]:
        yield from tucker2_reconstructions(name, kernel, layer)
        parts = spectra[name].parts or {}
        for scheme in ("spatial", "channel", "cp"):
            if scheme in parts:
                yield from _ranked_reconstructions(kernel, layer, scheme, parts[scheme])

    return reconstruct


def _choice_scores(name: str, kernel: np.ndarray, fisher: np.ndarray, layer: ChoiceLayer,
                   reconstruct: ReconstructFn) -> np.ndarray:
    """1/2 sum F * (W - W_hat_c)^2 per choice (the dense one, last, 0)."""
    scores = np.zeros(layer.max_rank)
    seen = np.zeros(layer.max_rank, dtype=bool)
    f_flat = fisher.reshape(-1)
    fw = f_flat * kernel.reshape(-1)
    fww = float(np.dot(fw, kernel.reshape(-1)))
    for k, w_hat in reconstruct(name, kernel, layer):
        flat = w_hat.reshape(-1)  # 1/2 (sum F W^2 - 2 sum F W W_hat + sum F W_hat^2), two passes over W_hat
        scores[k - 1] = max(0.5 * (fww - 2.0 * float(np.dot(fw, flat)) + float(np.dot(f_flat, flat * flat))), 0.0)
        seen[k - 1] = True
    if not seen[:-1].all():
        raise ValueError(f"layer {name}: the reconstruction gave {int(seen[:-1].sum())} of "
                         f"{layer.max_rank - 1} factored choices")
    return scores


def _rank_scores(kernel: np.ndarray, fisher: np.ndarray, spectrum, scheme: str, ranks: np.ndarray,
                 max_rank: int) -> np.ndarray:
    """1/2 sum F * (W - P_r V_r^T)^2 in the layer's matricization for each candidate rank (0 at max_rank)."""
    from edgecomp.factor.schemes import matricize

    m = matricize(torch.as_tensor(kernel), scheme).numpy()
    fm = matricize(torch.as_tensor(fisher), scheme).numpy()
    p, v = spectrum.P.numpy(), spectrum.V.numpy()
    want = {int(r) for r in ranks if r < max_rank}
    out, resid = {}, m.copy()
    for r in range(1, (max(want) if want else 0) + 1):
        resid -= np.outer(p[:, r - 1], v[:, r - 1])
        if r in want:
            out[r] = 0.5 * float(np.sum(fm * resid ** 2))
    return np.array([out.get(int(r), 0.0) for r in ranks])


def select_choices_by_scores(
    problem: RankProblem,
    model: nn.Module,
    cost,
    spectra: Mapping,
    data,
    *,
    indices: np.ndarray | None = None,
    sample: float | int = 0.05,
    batch_size: int = 32,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    reconstruct: ReconstructFn | None = None,
    time_limit: float | None = 30.0,
    mip_rel_gap: float = 1e-6,
    placement=None,
    heldout: np.ndarray | None = None,
) -> RankSelection:
    """COBLA for problems with ChoiceLayers (module docstring): score every choice of every layer by the
    Fisher-weighted loss estimate on a sub-sample of the training data `indices` (default all of `data`;
    `sample` a fraction or a count, seeded), then the exact knapsack minimizing the summed scores.

    cost: the model's ModelCost (each SVD layer's scheme); spectra: edgecomp.compression.problem.compute_spectra's
    (P, V of the SVD / CP layers). reconstruct(name, kernel, layer) -> (choice number, W_hat) for every
    factored choice, in any order (default: `auto_reconstructions(spectra)`, which covers Tucker-2 layers and
    scheme auto's mixed ones). Returns the per-layer choice
    numbers / ranks; info has the scores per layer and choice ("scores", in loss units), the chosen ones,
    the predicted loss increase, the sample size, seconds, costs and the solver's diagnostics.
    placement (edgecomp.torch_device.Placement, None: the CPU): the Fisher's forward and backward passes run
    on its device (the model is moved there for them and back); the scores and the knapsack on the CPU in float64.
    heldout: held-out training indices; when given, the Fisher knapsack's allocation competes with two others
    by their loss there (edgecomp.compression.choice_candidates), and info["candidates"] has each one's loss.
    Raises InfeasibleBudgetError as every budgeted method does."""
    if not problem.is_satisfiable():
        raise infeasible_error(problem, "cobla")
    if data is None:
        raise UserInputError("--method cobla needs training data for its loss estimates: pass --data SPEC")
    t0 = time.perf_counter()
    pool = np.arange(len(data)) if indices is None else np.asarray(indices)
    chosen = sample_indices(pool, sample, seed)
    names = [layer.name for layer in problem.layers]
    with moved_to(None if placement is None else placement.device, model):
        fisher = fisher_diagonal(model, names, data, chosen, batch_size=batch_size, seed=seed, loss_fn=loss_fn)
    t_fisher = time.perf_counter() - t0
    schemes = {lc.name: lc.decomposition.scheme for lc in cost.decomposable}
    reconstruct = reconstruct or auto_reconstructions(spectra)
    candidates, values, layer_values, shrunk_values = [], [], [], []
    for layer in problem.layers:
        kernel = model.get_submodule(layer.name).weight.detach().to("cpu", torch.float64).numpy()
        f_diag = fisher[layer.name].numpy()
        if isinstance(layer, ChoiceLayer):
            cand = LayerCandidates(np.arange(1, layer.max_rank + 1, dtype=np.int64),
                                   layer.choice_compute.astype(np.float64), layer.choice_params.astype(np.float64))
            score = _choice_scores(layer.name, kernel, f_diag, layer, reconstruct)
            errors = layer.errors.astype(np.float64)
        else:
            cand = layer_candidates(layer)
            score = _rank_scores(kernel, f_diag, spectra[layer.name], schemes[layer.name], cand.ranks, layer.max_rank)
            errors = truncation_errors(layer.sigma, cand.ranks, layer.max_rank)
        candidates.append(cand)
        values.append(score)
        if heldout is not None:  # the other knapsack objectives only compete on held-out data
            energy = max(float(np.sum(kernel ** 2)), 1e-300)
            layer_values.append(0.5 * float(np.mean(f_diag)) * errors)
            shrunk_values.append(np.sqrt(0.5 * float(np.mean(f_diag)) * energy) * errors / energy)
    ranks, sol = solve_layers(problem, values, candidates, maximize=False, time_limit=time_limit,
                              mip_rel_gap=mip_rel_gap)
    scoring_s = time.perf_counter() - t0 - t_fisher - sol.solve_time_s
    heldout_info = {}
    if heldout is not None and len(heldout):
        ranks, heldout_info = _best_by_heldout_loss(
            problem, model, spectra, schemes, reconstruct, data, np.asarray(heldout), loss_fn, placement,
            {"fisher": ranks, **{label: solve_layers(problem, v, candidates, maximize=False, time_limit=time_limit,
                                                      mip_rel_gap=mip_rel_gap)[0]
                                 for label, v in (("layer", layer_values), ("layer-sqrt", shrunk_values))}},
            time_limit)
    compute, params = problem.cost(ranks)
    picked = {layer.name: float(v[list(c.ranks).index(int(r))])
              for layer, v, c, r in zip(problem.layers, values, candidates, ranks)}
    return RankSelection(method="cobla", ranks=ranks, info={
        "objective": "sum of per-layer Fisher-weighted loss estimates 1/2 sum F (W - W_hat)^2 (exact knapsack)"
                     + (", then the lowest held-out loss of four knapsack allocations" if heldout_info else ""),
        "predicted_loss_increase": float(sum(picked.values())), **heldout_info,
        "scores": {layer.name: [float(s) for s in v] for layer, v in zip(problem.layers, values)},
        "chosen_scores": picked,
        "sample_size": int(chosen.size), "fisher_batch_size": int(batch_size),
        "fisher_seconds": t_fisher, "scoring_seconds": scoring_s,
        "macs": compute, "compute_unit": problem.compute_unit, "params": params,
        **solver_info(sol)})  # the solver's diagnostics are the Fisher knapsack's


def _best_by_heldout_loss(problem, model, spectra, schemes, reconstruct, data, heldout, loss_fn, placement,
                          allocations: dict, time_limit) -> tuple[np.ndarray, dict]:
    """The allocation (of `allocations`, plus pos-cvx's relative-error knapsack "error") with the lowest loss on
    the held-out indices (edgecomp.compression.choice_candidates), and what the report records of the choice."""
    from edgecomp.ranks.choices import select_choices_min_error

    t0 = time.perf_counter()
    allocations = {**allocations, "error": select_choices_min_error(problem, time_limit=time_limit).ranks}
    selections = {label: RankSelection("cobla", np.asarray(r)) for label, r in allocations.items()}
    with moved_to(None if placement is None else placement.device, model):
        best, losses = pick_by_heldout_loss(selections, problem, model, spectra, schemes, reconstruct, data,
                                            heldout, loss_fn=loss_fn)
    return np.asarray(allocations[best]), {
        "candidates": {label: {"heldout_loss": losses[label], "ranks": [int(r) for r in allocations[label]]}
                       for label in allocations},
        "chosen_candidate": best, "heldout_size": int(len(heldout)), "candidates_seconds": time.perf_counter() - t0}
