"""The LC algorithm for low-rank compression (Carreira-Perpinan 2017, Figure 2; Idelbayev &
Carreira-Perpinan, CVPR 2020, for the rank selection in the C step).

    w <- w_ref;  Theta <- Pi(w) (direct compression);  lambda <- 0
    for mu = mu0 * a^k, k = 0 .. n_mu-1:
        L step:  w <- argmin_w  L(w) + mu/2 ||w - Delta(Theta) - lambda/mu||^2   (steps_per_mu SGD steps)
        C step:  Theta <- Pi(w - lambda/mu)                                        (truncated SVD per layer)
        lambda <- lambda - mu (w - Delta(Theta))                                  (augmented Lagrangian only)
        stop if ||w - Delta(Theta)|| <= tol ||w||
    return Delta(Theta) built as factored layers

Only the compressed layers' weights are constrained; biases, BatchNorm and the layers left out
are learned freely in the L step (BatchNorm in train mode). Each SGD step's learning rate follows a
cosine from `lr` to 0 over the whole run (or lr * lr_decay^k per L step, the toolkit's schedule),
clipped to 1/mu (section 5.1: gradient steps on the penalty, of curvature mu, diverge above 2/mu).
The loss is cross-entropy, or distillation (T^2-scaled KL, Hinton et al. 2015) from `teacher` when
one is given, or from the reference model itself when the data has no labels.

Any other loss (detection, segmentation, regression): the user's loop `train_fn(model, penalty_fn,
steps)` (edgecomp.finetune.callables; the LC toolkit's L step is likewise the user's training code)
runs each L step in place of the SGD loop. penalty_fn() is mu/2 ||w - Delta(Theta) - lambda/mu||^2
over the compressed weights (edgecomp.lc.penalty), to be added to the user's loss; steps is
steps_per_mu. The user's optimizer and learning rate replace the built-in ones (keep them below
penalty_fn.max_lr = 1/mu, and pass lr = the loop's rate so that the default mu0 keeps reach 1).

Choosing mu0, a and steps_per_mu (measured with benchmarks/lc_fmnist.py on zoo:fmnist_cnn, 91.13%
test top-1, budgets 25% of its MACs and 35% of its parameters, spatial scheme, batch 128, SGD
momentum 0.9, lr 0.01; direct compression alone: 77.5%). An L step of S SGD steps pulls w toward
its target by about exp(-reach), reach = S * lr * mu / (1 - momentum) (`schedule.penalty_reach`):

  * mu0 with reach << 1 (the toolkit's mu0 = 1e-4..1e-3 with 50-step L steps: reach 0.005..0.05):
    the L steps ignore the penalty, the multiplier update (which assumes a solved L step) is
    inconsistent and ||w - Delta(Theta)|| grows from 0.62 ||w|| to 0.83 ||w|| (mu0 = 1e-3) or
    1.08 ||w|| (mu0 = 1e-4, a = 1.1, after 4 of 20 steps); the compressed model falls to 9-36% on
    the way, and mu0 = 1e-3, a = 1.5, 20 x 50 steps ends at 86.8% (exponential lr decay). The
    toolkit's mu0 works there because its L steps are epochs long (reach ~ 1).
  * mu0 with reach >> 1 (mu0 = 10: reach 100): the first L step closes 99% of the gap, the
    iterates stay at the direct compression (a warning says so); 4 x 100 steps end at 89.3%.
  * reach ~ 1 at mu0 (mu0 = 0.1 with 100 steps): the gap closes over the schedule (0.28, 0.08,
    ... 1e-3 ||w||); mu0 = 0.1, a = 1.5, 10 x 100 steps ends at 90.45% (AL) / 90.46% (QP) with the
    cosine lr (with the toolkit's exponential decay 0.98^k: 89.1% at a = 1.5, 89.9% at a = 2).
  * Baseline: fine-tuning the direct compression for the same 1000 steps (cosine, lr 0.01)
    reaches 90.89%. Same comparison at 12% MACs / 20% params (direct compression 39.3%): LC 89.4%,
    DC + fine-tuning 90.5%; channel scheme at 25% / 35% (direct 39.0%): LC 90.1%, DC + FT 90.8%.
    With ~2 epochs of SGD in all, LC trails DC + fine-tuning by 0.4-1.1 points on this small
    model: the penalty only binds in the last few mu, when the cosine lr is already small.

Hence DEFAULTS: a = 1.5, n_mu = 10, steps_per_mu = 100, lr = 0.01 (cosine) and mu0 = None, which
means reach(mu0) = 1, i.e. mu0 = (1 - momentum) / (lr * steps_per_mu) (0.1 at the defaults; Adam
uses momentum 0.9 in this rule), so other lr / L-step lengths keep the measured behaviour. At the
defaults mu ends at 3.8, where ||w - Delta(Theta)|| ~ 1e-3 ||w||.

Many processes (edgecomp.distributed, world W > 1): the L steps are data-parallel as fine-tuning is
(edgecomp.finetune.train): each rank's loss is its shard's share of the global batch, one all-reduce
sums the loss gradients, and the penalty's exact gradient mu (w - target) is added *after* it, on every
rank, to the summed gradient (the weights and targets are the same everywhere), so the penalty counts
once, as in one process, at no extra communication. After each L step the BatchNorm statistics are
averaged and rank 0's weights broadcast (a guard against drift; w is what the C step compresses, so
this is also the state after the C step). The C step then runs on every rank: it is deterministic
(float64 LAPACK and the exact knapsack on the same inputs give the same result on the same machine),
it costs the same wall time as rank 0 alone would, and no factors (several times the weights' size)
travel; agree_c_step checks rank 0's ranks against each rank's and broadcasts its deltas, and a rank
whose choice differs (nodes with other CPUs or LAPACK builds, near a tie) takes rank 0's whole result.
A user train_fn runs on every rank over its own data; the broadcast keeps rank 0's weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgecomp.distributed import (
    Dist,
    all_reduce_max_int,
    average_buffers,
    broadcast_object,
    broadcast_parameters,
    broadcast_tensors,
    current,
    sum_gradients,
)
from edgecomp.errors import UserInputError
from edgecomp.finetune.batches import batch_stream, check_dataset, epoch_batches
from edgecomp.finetune.callables import MetricFn, TrainFn, check_callable, run_train_fn
from edgecomp.finetune.checkpoint import Checkpoint, rng_state, set_rng_state, to_device
from edgecomp.finetune.evaluate import eval_mode, evaluate
from edgecomp.finetune.train import (
    check_shard_size,
    data_has_labels,
    make_optimizer,
    progress_bar,
    set_train_mode,
    shard_loss,
)
from edgecomp.graph import analyze_model
from edgecomp.lc import schedule as S
from edgecomp.lc.choices import ChoicesFn, ProjectFn
from edgecomp.lc.cstep import (
    CStepResult,
    budget_template,
    build_compressed,
    c_step,
    check_fixed_ranks,
    compressed_layers,
    rank_problem,
)
from edgecomp.lc.penalty import QuadraticPenalty
from edgecomp.ranks.problem import RankProblem, RankSelection
from edgecomp.io import to_jsonable
from edgecomp.torch_device import Placement, amp_name, grad_scaler, module_device, moved_to, rng_devices

log = logging.getLogger(__name__)

# Defaults (see the module docstring and benchmarks/lc_fmnist.py for the measurements).
DEFAULTS = dict(mu0=None, a=1.5, n_mu=10, steps_per_mu=100, lr=0.01, lr_decay=0.98, lr_schedule="cosine", tol=1e-3)


@dataclass
class LCResult:
    model: nn.Module  # Delta(Theta) with factored layers, in eval mode
    ranks: dict[str, int]  # ranks of the factored layers (what factorize_model / a recipe needs)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    layer_ranks: dict[str, int] = field(default_factory=dict)  # every compressed layer (K = left unfactored)
    converged: bool = False
    warning: str | None = None
    # Choice C step (Tucker-2 layers; edgecomp.lc.choices): the last C step's problem, whose ChoiceLayers hold
    # the built (r1, r2) pairs, and its selection (choice numbers / ranks per layer, in problem.layers order)
    problem: RankProblem | None = None
    selection: RankSelection | None = None


def _norm(tensors) -> float:
    return math.sqrt(sum(float(torch.sum(t.double() ** 2)) for t in tensors))


def run_lc(
    model: nn.Module,
    train_data,
    *,
    scheme: str,
    input_shape: tuple[int, ...],
    ranks: dict[str, int] | None = None,
    problem_budgets: tuple[float, float] | None = None,
    extra_budgets: tuple = (),
    mu0: float | None = DEFAULTS["mu0"],
    a: float = DEFAULTS["a"],
    n_mu: int = DEFAULTS["n_mu"],
    steps_per_mu: int = DEFAULTS["steps_per_mu"],
    lr: float = DEFAULTS["lr"],
    lr_decay: float = DEFAULTS["lr_decay"],
    lr_schedule: str = DEFAULTS["lr_schedule"],
    batch_size: int = 128,
    variant: str = "al",
    tol: float = DEFAULTS["tol"],
    seed: int = 0,
    progress: bool = True,
    eval_data=None,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    teacher: nn.Module | None = None,
    distill_temperature: float = 4.0,
    freeze_bn: bool = False,
    eval_batch_size: int = 256,
    train_fn: TrainFn | None = None,
    metric: MetricFn | None = None,
    choices_fn: ChoicesFn | None = None,
    project_fn: ProjectFn | None = None,
    placement: Placement | None = None,
    checkpoint: Checkpoint | None = None,
    dist: Dist | None = None,
) -> LCResult:
    """Compress `model` (not modified) by LC; ranks fixed (`ranks`: layer name -> rank) or chosen in
    every C step under `problem_budgets` = (MAC budget, parameter budget) of the whole model, and any
    `extra_budgets` (edgecomp.ranks.problem.LinearBudget, one entry per compressed layer in order, e.g. a
    measured latency budget or the never-slower rule) beside them.

    mu_k = mu0 * a^k for k < n_mu (mu0 = None: (1 - momentum) / (lr * steps_per_mu), see above);
    tol is relative: stop when ||w - Delta(Theta)|| <= tol * ||w|| over the compressed layers.

    History: one entry for the direct compression (step 0, mu 0) and one per mu with the mean
    L-step loss and penalty, ||w - Delta(Theta)|| (absolute and relative to ||w||), the C step's
    squared truncation error, ||Delta(Theta) - Delta(Theta_0)||, the ranks, the learning rate and,
    with eval_data, the compressed model's accuracy (agreement with the teacher when unlabeled, or
    the user's `metric(outputs, targets)`, higher is better).

    train_fn(model, penalty_fn, steps): the user's L step (see the module docstring); train_data is
    then unused and may be None, and the history's loss is None and its penalty the value at the
    end of the L step (the built-in loop reports means over its steps).

    Layers with explicit choices (edgecomp.lc.choices): under `problem_budgets`, every "tucker2" layer's
    (r1, r2) pairs are recomputed from w - lambda/mu in each C step and chosen by the exact knapsack
    (choices_fn(name, X) -> ChoiceLayer | None overrides how; None keeps a layer an SVD layer; project_fn
    (name, X, choice_layer, choice) -> Delta overrides the Tucker-2 projection). The result's `problem`
    and `selection` are then the last C step's, whose choices the returned model is built at. With fixed
    `ranks`, a "tucker2" layer's rank is its pair (r1, r2).

    placement (edgecomp.torch_device.Placement): the L steps, the teacher and evaluation run on its
    device under autocast at its AMP dtype (fp16 with a GradScaler, unscaled before the penalty's
    gradient is added); every C step's SVD runs on the CPU in float64, and the returned model is on
    the CPU. None: where `model` is, in float32.

    checkpoint (edgecomp.finetune.checkpoint.Checkpoint): after the L/C step of a mu, once
    `checkpoint.every` SGD steps have passed since the last write (and after the last mu), the weights,
    the multipliers before and after the update, the mu index, the history and the RNG state are saved;
    with checkpoint.resume the run continues at the next mu (its C step is recomputed from the saved
    weights and multipliers, exactly) and ends as an uninterrupted run would.

    dist (default edgecomp.distributed.current()): the processes sharing the L steps and evaluations
    (module docstring); every rank calls run_lc with the same arguments and gets the same model.
    """
    t_start = time.perf_counter()
    if lr_schedule not in S.LR_SCHEDULES:
        raise UserInputError(f"unknown lr schedule {lr_schedule!r}; choose one of {', '.join(S.LR_SCHEDULES)}")
    if variant not in S.VARIANTS:
        raise UserInputError(f"unknown LC variant {variant!r}; choose one of {', '.join(S.VARIANTS)}")
    if (ranks is None) == (problem_budgets is None):
        raise UserInputError("give exactly one of ranks (fixed ranks) and problem_budgets (ranks chosen by the C step)")
    check_callable(train_fn, "train_fn")
    check_callable(metric, "metric")
    if steps_per_mu < 1 or batch_size < 1:
        raise UserInputError("steps_per_mu and batch_size must be >= 1")
    if not lr > 0 or not tol >= 0 or not 0 < lr_decay <= 1:
        raise UserInputError("lr must be > 0, tol >= 0 and lr_decay in (0, 1]")
    if mu0 is None:  # penalty reach 1 in the first L step (see the module docstring)
        mu0 = S.reach_mu0(lr, steps_per_mu, momentum if optimizer == "sgd" else 0.9)
    try:
        mus = S.mu_schedule(mu0, a, n_mu)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    if train_fn is None:
        check_dataset(train_data)
    if eval_data is not None:
        check_dataset(eval_data, "evaluation data")

    dist = dist or current()
    work = copy.deepcopy(model)
    cost = analyze_model(work, tuple(input_shape), scheme)  # traced where the model is (the CPU)
    if placement is not None:
        work.to(placement.device)
    device = module_device(work)
    layers = compressed_layers(work, cost, list(ranks) if ranks is not None else None)
    fixed = check_fixed_ranks(ranks, layers) if ranks is not None else None
    if train_fn is None and not isinstance(train_data, DataLoader):
        check_shard_size(work, min(batch_size, len(train_data)), dist, freeze_bn)
    broadcast_parameters(work, dist)  # a guard: every rank starts from rank 0's weights
    labels = data_has_labels(train_data) if train_fn is None else True
    if labels is None:  # a plain Dataset: look at one batch
        _, y = next(epoch_batches(train_data, batch_size, shuffle=False, generator=torch.Generator()))
        labels = bool(torch.all(y >= 0))
    if labels is False and teacher is None:
        teacher = copy.deepcopy(model)  # distill from the reference when there are no labels
    distill = teacher is not None

    weights = {layer.name: work.get_submodule(layer.name).weight for layer in layers}
    lam = {name: torch.zeros_like(w) for name, w in weights.items()}

    problem = None
    w_ref = {name: w.detach().clone() for name, w in weights.items()}
    if problem_budgets is not None:
        from edgecomp.factor import svd_factors

        mac_budget, param_budget = (float(b) for b in problem_budgets)
        if choices_fn is None and any(layer.scheme == "tucker2" for layer in layers):
            from edgecomp.lc.choices import tucker2_choices_fn

            choices_fn = tucker2_choices_fn(cost)
        if choices_fn is not None:
            if extra_budgets:
                raise UserInputError(f"--method lc with --scheme {scheme}: its layers' choices have no per-rank "
                                     "costs, so latency cannot be budgeted on them; use the MAC budget")
            problem = budget_template(layers, cost, mac_budget, param_budget)
        else:
            spectra0 = {l.name: svd_factors(w_ref[l.name].cpu(), l.scheme) for l in layers}
            problem = rank_problem(layers, cost, spectra0, mac_budget, param_budget, extra_budgets)

    def do_c_step(mu: float, multipliers=None) -> CStepResult:
        """Pi(w - lambda/mu) on the CPU (float64 SVDs); deltas on the CPU."""
        multipliers = lam if multipliers is None else multipliers
        inputs = {name: S.c_step_input(w.detach(), multipliers[name], mu).cpu() for name, w in weights.items()}
        result = c_step(inputs, layers, ranks=fixed, problem=problem, choices_fn=choices_fn, project_fn=project_fn)
        return agree_c_step(result, dist)

    def evaluate_delta(cs: CStepResult) -> dict | None:
        if eval_data is None:
            return None
        probe = copy.deepcopy(work)
        with torch.no_grad():
            for name, delta in cs.deltas.items():
                probe.get_submodule(name).weight.copy_(delta)
        return evaluate(probe, eval_data, eval_batch_size, teacher=teacher if distill else None, metric=metric,
                        placement=placement, dist=dist)

    def entry(step: int, mu: float, cs: CStepResult, **extra) -> dict:
        diff = [weights[n].detach() - cs.deltas[n].to(device) for n in weights]
        distance, norm = _norm(diff), _norm(w.detach() for w in weights.values())
        shift = _norm(cs.deltas[n] - delta0[n] for n in weights) if step > 0 else 0.0
        out = {"step": step, "mu": mu, **extra, "distance": distance, "weight_norm": norm,
               "relative_distance": distance / max(norm, 1e-30),
               "compression_error": cs.squared_error, "delta_shift": shift, "ranks": dict(cs.ranks), **cs.info}
        metrics = evaluate_delta(cs)
        if metrics is not None:
            key = "top1" if metrics["top1"] is not None else "agreement_with_teacher"
            out["eval_accuracy"] = metrics.get("metric" if metric is not None else key)
            out["eval_loss"] = metrics["loss"]
        out["seconds"] = time.perf_counter() - t_start
        return out

    # Direct compression: Theta_0 = Pi(w_ref), lambda = 0.
    cs = do_c_step(0.0)
    delta0 = {n: d.clone() for n, d in cs.deltas.items()}
    history = [entry(0, 0.0, cs, lr=None, lr_end=None, loss=None, penalty=None)]
    initial_gap = history[0]["distance"]
    _log_entry(history[0])

    converged = False
    total_steps = len(mus) * steps_per_mu
    fingerprint = None
    saved = None
    if checkpoint is not None:
        fingerprint = {"mus": [float(m) for m in mus], "steps_per_mu": steps_per_mu, "lr": lr, "lr_decay": lr_decay,
                       "lr_schedule": lr_schedule, "batch_size": batch_size, "variant": variant, "tol": tol,
                       "seed": seed, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
                       "distill": distill, "distill_temperature": distill_temperature, "freeze_bn": freeze_bn,
                       "ranks": fixed, "problem_budgets": problem_budgets, "scheme": scheme,
                       "train_samples": len(train_data) if train_data is not None else None,
                       "user_l_step": train_fn is not None, "amp": amp_name(placement.amp if placement else None),
                       "parameters": {name: list(p.shape) for name, p in work.named_parameters()}}
        saved = checkpoint.load("lc", fingerprint)
    done_k = -1
    if saved is not None:
        done_k = int(saved["k"])
        work.load_state_dict(saved["work"])
        lam_before = to_device(saved["lam_before"], device)
        cs = do_c_step(float(mus[done_k]), lam_before)  # the C step of mu_k, recomputed exactly
        lam = to_device(saved["lam"], device)
        history = list(saved["history"])
        converged = bool(saved["converged"])
        log.info("resuming LC after mu %d/%d (%s)", done_k + 1, len(mus), checkpoint.path("lc"))
    last_saved = (done_k + 1) * steps_per_mu
    bar = progress_bar(total_steps, progress, f"LC ({variant})")
    bar.update(last_saved)
    modes = [(m, m.training) for m in work.modules()]
    scaler = grad_scaler(placement)
    try:
        with torch.random.fork_rng(devices=rng_devices(device)), eval_mode(teacher), \
                moved_to(device if placement is not None else None, teacher):
            torch.manual_seed(seed)
            if saved is not None:
                set_rng_state(saved["rng"], device)
            stream = None
            if train_fn is None:
                stream = batch_stream(train_data, batch_size, generator=torch.Generator().manual_seed(seed),
                                      placement=placement, start_step=last_saved,
                                      part=(dist.rank, dist.world_size) if dist.active else None)
            for k, mu in enumerate(mus):
                if k <= done_k or converged:
                    continue
                mu = float(mu)
                targets = {n: S.penalty_target(cs.deltas[n].to(device), lam[n], mu) for n in weights}
                lrs = [S.sgd_lr(lr, k * steps_per_mu + i, total_steps, k, mu, schedule=lr_schedule, lr_decay=lr_decay)
                       for i in range(steps_per_mu)]
                set_train_mode(work, freeze_bn)
                if train_fn is None:
                    opt = make_optimizer(work, optimizer, lr, momentum, weight_decay)
                    loss, penalty = _l_step(work, opt, stream, weights, targets, mu, lrs, device,
                                            teacher if distill else None, distill_temperature, bar, placement, scaler,
                                            dist)
                else:
                    loss, penalty, lrs = _user_l_step(train_fn, work, weights, targets, mu, steps_per_mu, bar)
                average_buffers(work, dist)  # per-shard BatchNorm statistics -> the same on every rank
                broadcast_parameters(work, dist)  # a guard against drift: rank 0's w, which the C step compresses
                lam_before = {n: t.clone() for n, t in lam.items()} if checkpoint is not None else None
                cs = do_c_step(mu)
                if variant == "al":
                    with torch.no_grad():
                        for n, w in weights.items():
                            lam[n] = S.multiplier_update(lam[n], mu, w.detach(), cs.deltas[n].to(device))
                item = entry(k + 1, mu, cs, lr=lrs[0], lr_end=lrs[-1], loss=loss, penalty=penalty)
                history.append(item)
                _log_entry(item)
                bar.set_postfix(mu=f"{mu:.2g}", loss="-" if loss is None else f"{loss:.3f}",
                                dist=f"{item['relative_distance']:.2e}")
                converged = S.converged(item["distance"], item["weight_norm"], tol)
                steps_done = (k + 1) * steps_per_mu
                if checkpoint is not None and (converged or k == len(mus) - 1 or checkpoint.due(steps_done, last_saved)):
                    checkpoint.save("lc", fingerprint, {
                        "step": steps_done, "k": k, "converged": converged, "work": work.state_dict(),
                        "lam_before": lam_before, "lam": lam, "history": to_jsonable(history),
                        "rng": rng_state(device)})
                    last_saved = steps_done
                if converged:
                    break
    finally:
        bar.close()
        for m, training in modes:
            m.training = training

    warning = S.path_warning(initial_gap, [h["distance"] for h in history[1:]])
    if warning:
        log.warning(warning)
        warnings.warn(warning, stacklevel=2)
    compressed, factored = build_compressed(work, layers, cs, scheme)
    broadcast_parameters(compressed, dist)  # rank 0's factors (each rank factored its own, equal, deltas)
    compressed.eval()
    if placement is not None:
        compressed.cpu()  # saved and exported to ONNX from the CPU
    return LCResult(model=compressed, ranks=factored, history=history, seconds=time.perf_counter() - t_start,
                    layer_ranks=dict(cs.ranks), converged=converged, warning=warning, problem=cs.problem,
                    selection=cs.selection)


def _l_step(model, opt, stream, weights, targets, mu, lrs, device, teacher, temperature, bar, placement=None,
            scaler=None, dist: Dist | None = None) -> tuple[float, float]:
    """len(lrs) SGD steps on L(w) + mu/2 sum_i ||w_i - target_i||^2; returns the mean loss and penalty.

    The penalty's gradient mu (w_i - target_i) is added to the loss gradient of each compressed
    weight; every other parameter follows the loss alone. Under AMP the loss runs in autocast; with
    a GradScaler (fp16) its gradients are unscaled before the penalty's (exact, float32) is added.
    Many processes: the loss gradient is the all-reduced sum of the ranks' shard shares, and the
    penalty's is added after the all-reduce, on every rank (so it counts once).
    """
    dist = dist or current()
    loss_sum = pen_sum = 0.0
    for eta in lrs:
        for group in opt.param_groups:
            group["lr"] = eta
        _, x, y, global_size = next(stream)
        non_blocking = bool(placement and placement.pin_memory)
        x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
        opt.zero_grad(set_to_none=True)
        loss = shard_loss(model, x, None if teacher is not None else y, teacher, global_size, dist, placement,
                          temperature, 1.0)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
        loss = sum_gradients(model, dist, extra=loss)  # the global batch's mean loss, on every rank
        if not torch.isfinite(loss):
            raise UserInputError(f"LC L step diverged at mu={mu:.3g} (loss {float(loss)}); lower lr")
        if scaler is not None:
            scaler.unscale_(opt)
        penalty = 0.0
        with torch.no_grad():
            for n, w in weights.items():
                gap = w - targets[n]
                penalty += float(torch.sum(gap * gap))
                w.grad.add_(gap, alpha=mu)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        loss_sum += float(loss)
        pen_sum += 0.5 * mu * penalty
        bar.update(1)
    return loss_sum / len(lrs), pen_sum / len(lrs)


def _user_l_step(train_fn: TrainFn, model, weights, targets, mu, steps, bar) -> tuple[None, float, list[None]]:
    """The user's L step on their loss + penalty_fn(); returns (no loss, the penalty after it, no lrs)."""
    penalty_fn = QuadraticPenalty(weights, targets, mu)
    run_train_fn(train_fn, model, penalty_fn, steps, f"LC L step at mu={mu:.3g}")
    bar.update(steps)
    return None, penalty_fn.value(), [None]


def agree_c_step(cs: CStepResult, dist: Dist) -> CStepResult:
    """The C step every rank computed, made rank 0's on every rank (module docstring): rank 0's ranks
    are compared with each rank's; when all agree, rank 0's deltas are broadcast into each rank's
    result (bitwise the same from then on), else the ranks that differ take rank 0's whole result."""
    if not dist.active:
        return cs
    ranks0 = broadcast_object(cs.ranks if dist.is_main else None, dist)
    if all_reduce_max_int(int(ranks0 != cs.ranks), dist):
        log.warning("LC C step: the processes chose different ranks (nodes with other CPUs or LAPACK builds?); "
                    "all take rank 0's")
        full = broadcast_object(cs if dist.is_main else None, dist)
        return cs if dist.is_main else full
    cs.deltas = {name: delta.contiguous() for name, delta in cs.deltas.items()}
    broadcast_tensors([cs.deltas[name] for name in sorted(cs.deltas)], dist)
    return cs


def _log_entry(item: dict) -> None:
    acc = item.get("eval_accuracy")
    log.info("LC step %d mu=%.3g loss=%s ||w-D||=%.4g (rel %.2e) ranks=%s%s", item["step"], item["mu"],
             "-" if item.get("loss") is None else f"{item['loss']:.4f}", item["distance"], item["relative_distance"],
             item["ranks"], "" if acc is None else f" eval={acc:.4f}")
