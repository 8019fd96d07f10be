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

A user loop (`train_fn(model, penalty_fn, steps)`, edgecomp.finetune.callables) replaces the built-in
one for losses that are not cross-entropy: it is called once, in train() mode and in the run's RNG
stream, with penalty_fn() = 0 and the built-in step count; evaluation (with a user `metric` where
top-1 does not apply) and keep_best then compare the starting weights with the weights it returns.
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

from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.finetune.batches import batch_stream, check_dataset, steps_per_epoch
from edgecomp.finetune.callables import MetricFn, TrainFn, ZeroPenalty, check_callable, run_train_fn
from edgecomp.finetune.evaluate import eval_mode, evaluate
from edgecomp.finetune.losses import training_loss
from edgecomp.finetune.schedule import cosine_lr

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
) -> TrainResult:
    """Train `model` in place for `epochs` (fractional allowed) passes over `train_data`.

    The learning rate follows a cosine from `lr` to `min_lr` over all steps (after `warmup_steps`
    of linear warm-up); `max_steps` caps the step count. Every `log_every` steps (default: once
    per epoch) and at the end a history entry is recorded and `eval_data`, if given, evaluated.
    With keep_best and eval_data, the checkpoint with the best eval metric (top-1 with labels,
    else agreement with the teacher, or the user's `metric`) -- the starting weights included -- is
    loaded at the end.

    train_fn: the user's loop in place of the built-in one (see the module docstring); train_data
    may then be None if max_steps gives the step count, and the optimizer, lr schedule and loss
    settings are the user's business (the teacher still serves evaluation).
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
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay) if train_fn is None else None
    modes = [(m, m.training) for m in model.modules()]

    result = TrainResult(model=model)
    best_state = None
    start = time.perf_counter()

    def record(step: int, train_loss: float | None, current_lr: float | None) -> None:
        nonlocal best_state
        entry = {"step": step, "epoch": step / spe if spe else None, "lr": current_lr, "train_loss": train_loss,
                 "eval_accuracy": None, "eval_loss": None}
        if eval_data is not None:
            metrics = evaluate(model, eval_data, eval_batch_size, teacher=teacher, metric=metric)
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

    with torch.random.fork_rng(devices=[]), eval_mode(teacher):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if keep_best and eval_data is not None:
            record(0, None, None)
        if train_fn is not None:
            try:
                set_train_mode(model, freeze_bn)
                run_train_fn(train_fn, model, ZeroPenalty(device), total, "fine-tuning")
            finally:
                for m, training in modes:
                    m.training = training
            record(total, None, None)
            return _finish(result, model, best_state, total, start)
        stream = batch_stream(train_data, batch_size, generator=generator, drop_last=True)
        loss_sum, loss_n = 0.0, 0
        bar = progress_bar(total, progress, "train" if teacher is None else "distill")
        try:
            set_train_mode(model, freeze_bn)
            for step in range(total):
                current_lr = cosine_lr(lr, step, total, min_lr=min_lr, warmup=warmup_steps)
                for group in opt.param_groups:
                    group["lr"] = current_lr
                _, x, y = next(stream)
                x, y = x.to(device), y.to(device)
                has_y = bool(labels) if labels is not None else bool(torch.all(y >= 0))
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                elif not has_y:
                    raise UserInputError("the training data has unlabeled samples: give a teacher model to distill from")
                if teacher is not None and distill_alpha < 1 and not has_y:
                    raise UserInputError("the training data has unlabeled samples: use distill_alpha=1")
                loss = training_loss(model(x), y if has_y else None, t_logits,
                                     temperature=distill_temperature, alpha=distill_alpha)
                if not torch.isfinite(loss.detach()):
                    raise EdgecompError(f"training diverged at step {step} (loss {float(loss)}); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach())
                loss_n += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", refresh=False)
                done = step + 1
                if done % log_every == 0 or done == total:
                    record(done, loss_sum / loss_n, current_lr)
                    loss_sum, loss_n = 0.0, 0
                    set_train_mode(model, freeze_bn)
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
