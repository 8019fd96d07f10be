"""Fine-tuning and knowledge distillation: one seeded training loop with a cosine schedule.

The objective is cross-entropy on labels, or alpha * T^2 KL(teacher_T || student_T) +
(1 - alpha) * CE (see edgecomp.finetune.losses); with distill_alpha = 1 no labels are needed.

BatchNorm: the student trains in train() mode, so BN batch statistics update its running
statistics (unless freeze_bn: then BN layers stay in eval() and only their affine parameters
learn, which is what tiny fine-tuning sets need); the teacher always runs in eval(); evaluation runs
in eval() and never touches running statistics. Weight decay is applied to weight matrices and
kernels only (parameters with ndim > 1), not to biases and BN scales/shifts.

Determinism: the run uses its own RNG stream (`torch.random.fork_rng` + `manual_seed(seed)`, which
seeds dropout) and a seeded generator for the batch order; the caller's RNG state is untouched.
A checkpointed run killed and resumed (edgecomp.finetune.checkpoint) ends with the same weights as
an uninterrupted one: the checkpoint holds the RNG states, and the batch stream replays the seeded
permutations up to the saved step (edgecomp.finetune.batches).

A user loop (`train_fn(model, penalty_fn, steps)`, edgecomp.finetune.callables) replaces the built-in
one for losses that are not cross-entropy: it is called once, in train() mode and in the run's RNG
stream, with penalty_fn() = 0 and the built-in step count; evaluation (with a user `metric` where
top-1 does not apply) and keep_best then compare the starting weights with the weights it returns.

Many processes (edgecomp.distributed, world W > 1): data parallelism by a manual gradient
all-reduce (not DistributedDataParallel: no `module.` prefix, and the same loop serves LC's
penalised L steps). Every rank draws the same global batch (same seed) and loads only its shard,
shard_indices(batch, rank, W); its loss is the shard's summed loss / the global batch size, and
sum_gradients adds the ranks' gradients between backward() and the optimizer step, which is then
exactly the 1-process gradient (up to float rounding) and the same on every rank, so every rank
takes the same step (fp16: the GradScaler unscales the summed gradients, and its inf check, hence
its skip decision, is the same everywhere). The logged training loss is the global batch's.
BatchNorm normalises with per-shard batch statistics (torch's SyncBatchNorm refuses CPU tensors),
so a model with BatchNorm in train mode follows the 1-process run only approximately; its running
statistics are averaged over the ranks (average_buffers) before every held-out evaluation, every
checkpoint and at the end. Dropout draws from the same seeded stream on every rank. Evaluation is
sharded too (edgecomp.finetune.evaluate); checkpoints are written by rank 0 alone. A user train_fn
is not sharded: it runs on every rank over its own data, and rank 0's weights are kept.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from edgecomp.distributed import Dist, average_buffers, broadcast_parameters, current, sum_gradients
from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.finetune.batches import batch_stream, check_dataset, steps_per_epoch
from edgecomp.finetune.callables import MetricFn, TrainFn, ZeroPenalty, check_callable, run_train_fn
from edgecomp.finetune.checkpoint import Checkpoint, rng_state, set_rng_state, to_device
from edgecomp.finetune.evaluate import eval_mode, evaluate
from edgecomp.finetune.losses import training_loss
from edgecomp.finetune.schedule import cosine_lr
from edgecomp.torch_device import Placement, amp_name, autocast, grad_scaler, module_device, moved_to, rng_devices

OPTIMIZERS = ("sgd", "adam", "adamw")
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The trained model (the same object that was passed in; best checkpoint loaded when kept)."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_accuracy: float | None = None  # best value of `metric` on eval_data
    steps: int = 0
    seconds: float = 0.0
    best_step: int | None = None
    metric: str | None = None  # "top1", "agreement_with_teacher", "metric" (the user's) or None (nothing to compare)


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (momentum), Adam or AdamW; weight decay only on parameters with ndim > 1."""
    if name not in OPTIMIZERS:
        raise UserInputError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserInputError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


def data_has_labels(data) -> bool | None:
    """The dataset's own `has_labels` flag (None when it has none: checked per batch)."""
    flag = getattr(data, "has_labels", None)
    if flag is None and hasattr(data, "dataset"):  # a DataLoader
        flag = getattr(data.dataset, "has_labels", None)
    return None if flag is None else bool(flag)


def progress_bar(total: int, progress: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not (progress and sys.stderr.isatty()))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def check_shard_size(model: nn.Module, batch: int, dist: Dist, freeze_bn: bool = False) -> None:
    """Refuse a global batch too small to give every rank samples (two each when BatchNorm trains:
    a batch of one sample has no batch statistics)."""
    if not dist.active:
        return
    bn = not freeze_bn and any(isinstance(m, _BatchNorm) for m in model.modules())
    need = (2 if bn else 1) * dist.world_size
    if batch < need:
        raise UserInputError(f"a batch of {batch} samples is too small for {dist.world_size} processes: each needs "
                             f"{need // dist.world_size}{' (BatchNorm)' if bn else ''}; use a batch of at least "
                             f"{need} or fewer processes")


def all_labeled(y, dist: Dist) -> bool:
    """True when every sample of the global batch has a label (>= 0): the ranks agree on it."""
    from edgecomp.distributed import all_reduce_max_int

    unlabeled = int(isinstance(y, torch.Tensor) and len(y) > 0 and not bool(torch.all(y >= 0)))
    return not all_reduce_max_int(unlabeled, dist)


def shard_loss(model: nn.Module, x, y, teacher, global_size: int, dist: Dist, placement, temperature: float,
               alpha: float) -> torch.Tensor:
    """This rank's share of the global batch's mean loss: (its shard's summed loss) / (global batch size),
    so that the ranks' shares (and their gradients) sum to the 1-process ones; with one process, the
    batch's mean loss itself. An empty shard contributes 0."""
    if len(x) == 0:
        return next(model.parameters()).new_zeros(()).requires_grad_()
    t_logits = None
    if teacher is not None:
        with torch.no_grad(), autocast(placement):
            t_logits = teacher(x)
    with autocast(placement):
        logits = model(x)
    if placement is not None and placement.amp is not None:  # the loss in float32
        logits, t_logits = logits.float(), None if t_logits is None else t_logits.float()
    loss = training_loss(logits, y, t_logits, temperature=temperature, alpha=alpha)
    return loss * (len(x) / global_size) if dist.active else loss


def _check_args(epochs, lr, batch_size, distill_alpha, distill_temperature, max_steps, log_every) -> None:
    if not (epochs > 0 and math.isfinite(epochs)):
        raise UserInputError(f"epochs must be positive, got {epochs}")
    if not lr > 0:
        raise UserInputError(f"learning rate must be positive, got {lr}")
    if batch_size < 1:
        raise UserInputError(f"batch size must be >= 1, got {batch_size}")
    if not 0.0 <= distill_alpha <= 1.0:
        raise UserInputError(f"distill_alpha must be in [0, 1], got {distill_alpha}")
    if not distill_temperature > 0:
        raise UserInputError(f"distillation temperature must be positive, got {distill_temperature}")
    if max_steps is not None and max_steps < 1:
        raise UserInputError(f"max_steps must be >= 1, got {max_steps}")
    if log_every is not None and log_every < 1:
        raise UserInputError(f"log_every must be >= 1, got {log_every}")


def train(
    model: nn.Module,
    train_data,
    *,
    epochs: float = 1.0,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    seed: int = 0,
    eval_data=None,
    teacher: nn.Module | None = None,
    distill_temperature: float = 4.0,
    distill_alpha: float = 1.0,
    keep_best: bool = True,
    freeze_bn: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    log_every: int | None = None,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    eval_batch_size: int = 256,
    train_fn: TrainFn | None = None,
    metric: MetricFn | None = None,
    placement: Placement | None = None,
    checkpoint: Checkpoint | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Train `model` in place for `epochs` (fractional allowed) passes over `train_data`.

    The learning rate follows a cosine from `lr` to `min_lr` over all steps (after `warmup_steps`
    of linear warm-up); `max_steps` caps the step count. Every `log_every` steps (default: once
    per epoch) and at the end a history entry is recorded and `eval_data`, if given, evaluated.
    With keep_best and eval_data, the checkpoint with the best eval metric (top-1 with labels,
    else agreement with the teacher, or the user's `metric`) -- the starting weights included -- is
    loaded at the end.

    placement (edgecomp.torch_device.Placement): the device the model and the teacher train and
    evaluate on (moved there, and back to where they were when training ends), the autocast dtype
    (fp16 with a GradScaler) and the DataLoader workers; None: where the model is, float32, in process.
    With AMP off the arithmetic is exactly that of a run without a placement.

    checkpoint (edgecomp.finetune.checkpoint.Checkpoint): every `checkpoint.every` steps the model,
    optimizer, GradScaler, RNG states, step, history and best weights are saved; with
    checkpoint.resume the run continues from a saved step and ends with the same weights as an
    uninterrupted run (the lr schedule is a function of the step, so it has no state of its own).

    train_fn: the user's loop in place of the built-in one (see the module docstring); train_data
    may then be None if max_steps gives the step count, and the optimizer, lr schedule and loss
    settings are the user's business (the teacher still serves evaluation). It is not checkpointed.

    dist (default edgecomp.distributed.current()): the processes training together (module docstring);
    every rank must call train with the same arguments, and returns the same weights.
    """
    _check_args(epochs, lr, batch_size, distill_alpha, distill_temperature, max_steps, log_every)
    check_callable(train_fn, "train_fn")
    check_callable(metric, "metric")
    if train_fn is None or train_data is not None:
        check_dataset(train_data)
    elif max_steps is None:
        raise UserInputError("train_fn without training data: give max_steps (the steps to pass to train_fn)")
    if eval_data is not None:
        check_dataset(eval_data, "evaluation data")
    labels = data_has_labels(train_data) if train_data is not None else None
    if train_fn is None and teacher is None and labels is False:
        raise UserInputError("the training data has no labels: give a teacher model to distill from")
    if train_fn is None and teacher is not None and distill_alpha < 1 and labels is False:
        raise UserInputError("the training data has no labels: use distill_alpha=1 (pure distillation)")

    spe = steps_per_epoch(train_data, batch_size, drop_last=True) if train_data is not None else None
    total = max(1, math.ceil(epochs * spe)) if spe is not None else int(max_steps)
    if max_steps is not None:
        total = min(total, int(max_steps))
    log_every = int(log_every) if log_every else (spe or total)
    dist = dist or current()
    if train_data is not None and train_fn is None and not isinstance(train_data, DataLoader):
        check_shard_size(model, min(batch_size, len(train_data)), dist, freeze_bn)
    settings = dict(total=total, spe=spe, log_every=log_every, optimizer=optimizer, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, batch_size=batch_size, seed=seed, teacher=teacher, eval_data=eval_data,
                    distill_temperature=distill_temperature, distill_alpha=distill_alpha, keep_best=keep_best,
                    freeze_bn=freeze_bn, progress=progress, min_lr=min_lr, warmup_steps=warmup_steps,
                    eval_batch_size=eval_batch_size, train_fn=train_fn, metric=metric, labels=labels,
                    placement=placement, checkpoint=checkpoint if train_fn is None else None, dist=dist)
    with moved_to(placement.device if placement else None, model, teacher):
        return _train(model, train_data, **settings)


def _fingerprint(model: nn.Module, train_data, s: dict) -> dict:
    """What decides a fine-tuning run's trajectory: a checkpoint resumes only a run with all of it equal."""
    keys = ("total", "log_every", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "seed",
            "distill_temperature", "distill_alpha", "keep_best", "freeze_bn", "min_lr", "warmup_steps")
    return {**{k: s[k] for k in keys}, "train_samples": len(train_data),
            "eval_samples": len(s["eval_data"]) if s["eval_data"] is not None else None,
            "teacher": s["teacher"] is not None, "amp": amp_name(s["placement"].amp if s["placement"] else None),
            "parameters": {name: list(p.shape) for name, p in model.named_parameters()}}


def _train(model: nn.Module, train_data, *, total, spe, log_every, optimizer, lr, momentum, weight_decay, batch_size,
           seed, teacher, eval_data, distill_temperature, distill_alpha, keep_best, freeze_bn, progress, min_lr,
           warmup_steps, eval_batch_size, train_fn, metric, labels, placement, checkpoint, dist) -> TrainResult:
    device = module_device(model)
    broadcast_parameters(model, dist)  # a guard: every rank starts from rank 0's weights
    non_blocking = bool(placement and placement.pin_memory)
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay) if train_fn is None else None
    scaler = grad_scaler(placement) if train_fn is None else None
    modes = [(m, m.training) for m in model.modules()]

    result = TrainResult(model=model)
    best_state = None
    start = time.perf_counter()

    def record(step: int, train_loss: float | None, current_lr: float | None) -> None:
        nonlocal best_state
        average_buffers(model, dist)  # per-shard BatchNorm statistics -> the same on every rank
        entry = {"step": step, "epoch": step / spe if spe else None, "lr": current_lr, "train_loss": train_loss,
                 "eval_accuracy": None, "eval_loss": None}
        if eval_data is not None:
            metrics = evaluate(model, eval_data, eval_batch_size, teacher=teacher, metric=metric, placement=placement,
                               dist=dist)
            entry.update(eval_accuracy=metrics["top1"], eval_loss=metrics["loss"])
            if metric is not None:
                entry["eval_metric"] = metrics["metric"]
            elif teacher is not None:
                entry["eval_agreement"] = metrics["agreement_with_teacher"]
            key = "metric" if metric is not None else (
                "top1" if metrics["top1"] is not None else ("agreement_with_teacher" if teacher is not None else None))
            if key is not None:
                result.metric = key
                value = metrics[key]
                if result.best_accuracy is None or value > result.best_accuracy:
                    result.best_accuracy, result.best_step = value, step
                    if keep_best:
                        best_state = copy.deepcopy(model.state_dict())
        result.history.append(entry)
        score = entry.get("eval_metric", entry["eval_accuracy"])
        log.info("step %d/%d (epoch %s) lr=%s train_loss=%s eval_accuracy=%s eval_loss=%s", step, total,
                 _fmt(entry["epoch"]), _fmt(current_lr), _fmt(train_loss), _fmt(score), _fmt(entry["eval_loss"]))

    fingerprint = _fingerprint(model, train_data, locals()) if checkpoint is not None else None
    with torch.random.fork_rng(devices=rng_devices(device)), eval_mode(teacher):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if train_fn is not None:
            if keep_best and eval_data is not None:
                record(0, None, None)
            try:
                set_train_mode(model, freeze_bn)
                run_train_fn(train_fn, model, ZeroPenalty(device), total, "fine-tuning")
                broadcast_parameters(model, dist)  # the user's loop ran on every rank: keep rank 0's result
            finally:
                for m, training in modes:
                    m.training = training
            record(total, None, None)
            return _finish(result, model, best_state, total, start)
        first, loss_sum, loss_n = 0, 0.0, 0
        saved = checkpoint.load("finetune", fingerprint) if checkpoint is not None else None
        if saved is not None:
            first, loss_sum, loss_n = int(saved["step"]), float(saved["loss_sum"]), int(saved["loss_n"])
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            if scaler is not None and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            best_state = to_device(saved["best_state"], device) if saved.get("best_state") is not None else None
            result.history = list(saved["history"])
            result.best_accuracy, result.best_step, result.metric = saved["best"]
            set_rng_state(saved["rng"], device)
            log.info("resuming fine-tuning from step %d/%d (%s)", first, total, checkpoint.path("finetune"))
        elif keep_best and eval_data is not None:
            record(0, None, None)
        last_saved = first
        stream = batch_stream(train_data, batch_size, generator=generator, drop_last=True, placement=placement,
                              start_step=first, part=(dist.rank, dist.world_size) if dist.active else None)
        bar = progress_bar(total, progress, "train" if teacher is None else "distill")
        bar.update(first)
        try:
            set_train_mode(model, freeze_bn)
            for step in range(first, total):
                current_lr = cosine_lr(lr, step, total, min_lr=min_lr, warmup=warmup_steps)
                for group in opt.param_groups:
                    group["lr"] = current_lr
                _, x, y, global_size = next(stream)
                x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
                has_y = bool(labels) if labels is not None else all_labeled(y, dist)
                if teacher is None and not has_y:
                    raise UserInputError("the training data has unlabeled samples: give a teacher model to distill from")
                if teacher is not None and distill_alpha < 1 and not has_y:
                    raise UserInputError("the training data has unlabeled samples: use distill_alpha=1")
                opt.zero_grad(set_to_none=True)
                loss = shard_loss(model, x, y if has_y else None, teacher, global_size, dist, placement,
                                  distill_temperature, distill_alpha)
                if scaler is None:
                    loss.backward()
                else:
                    scaler.scale(loss).backward()
                loss = sum_gradients(model, dist, extra=loss)  # now the global batch's mean loss, on every rank
                if not torch.isfinite(loss):
                    raise EdgecompError(f"training diverged at step {step} (loss {float(loss)}); lower the learning rate")
                if scaler is None:
                    opt.step()
                else:
                    scaler.step(opt)  # unscales the summed gradients first
                    scaler.update()
                loss_sum += float(loss)
                loss_n += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", refresh=False)
                done = step + 1
                if done % log_every == 0 or done == total:
                    record(done, loss_sum / loss_n, current_lr)
                    loss_sum, loss_n = 0.0, 0
                    set_train_mode(model, freeze_bn)
                if checkpoint is not None and done < total and checkpoint.due(done, last_saved):
                    average_buffers(model, dist)
                    checkpoint.save("finetune", fingerprint, {
                        "step": done, "loss_sum": loss_sum, "loss_n": loss_n, "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                        "best_state": best_state, "history": result.history,
                        "best": [result.best_accuracy, result.best_step, result.metric], "rng": rng_state(device)})
                    last_saved = done
        finally:
            bar.close()
            for m, training in modes:
                m.training = training

    return _finish(result, model, best_state, total, start)


def _finish(result: TrainResult, model: nn.Module, best_state: dict | None, total: int, start: float) -> TrainResult:
    if best_state is not None:
        model.load_state_dict(best_state)
    result.steps = total
    result.seconds = time.perf_counter() - start
    return result
