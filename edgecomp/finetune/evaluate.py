"""Accuracy / loss of a model on a dataset, and its agreement with a teacher.

Evaluation runs in eval() mode (BatchNorm uses its running statistics, dropout is off) under
no_grad, so it never changes the model; the caller's train/eval mode is restored afterwards.

Many processes (edgecomp.distributed, world W > 1): rank r evaluates the samples
shard_indices(0..n-1, r, W) (a user's DataLoader: its batches r, r + W, ...), and one all-reduce sums
the counts (n, top-1/top-5 hits, agreements) and the loss sums, so every rank returns the same
numbers: top-1 and top-5 exactly those of one process, the losses up to float rounding. Every rank
must call evaluate at the same point (it is a collective), with the same model. A user `metric`
is not sharded: every rank computes it on the whole dataset.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from edgecomp.data.fit import check_labels, check_num_classes, runs_on
from edgecomp.distributed import Dist, all_reduce_sum, current, shard_indices
from edgecomp.models.modes import eval_mode
from edgecomp.finetune.batches import check_dataset, epoch_batches, subset
from edgecomp.finetune.callables import MetricFn, check_callable, detach_cpu, gather, user_metric
from edgecomp.torch_device import Placement, autocast, module_device, moved_to


def _has_labels(data, labels: torch.Tensor) -> bool:
    flag = getattr(data, "has_labels", None)
    if flag is not None:
        return bool(flag)
    return bool(torch.all(labels >= 0))


@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int = 256, teacher: nn.Module | None = None,
             metric: MetricFn | None = None, placement: Placement | None = None, dist: Dist | None = None) -> dict:
    """Metrics of `model` on `data`.

    placement (edgecomp.torch_device): the device the model (and teacher) run on for the evaluation,
    moved there and back afterwards, under autocast at its AMP dtype, loading batches with its
    workers; None: where the model is, in float32, in this process.

    With a user `metric(outputs, targets) -> float` (higher is better; edgecomp.finetune.callables),
    for models that are not classifiers: returns {"n", "metric", "top1": None, "top5": None,
    "loss": None}, where metric is computed once on the outputs and targets of the whole dataset.
    `data` then yields any (inputs, targets) pairs (float targets, dicts, ...) and nothing is
    checked against classification labels.

    Returns {"n", "top1", "top5", "loss"} where top1/top5 are accuracies in [0, 1] (only with
    labels; top-k uses k = min(5, classes)) and loss is the mean cross-entropy; with a teacher also
    "agreement_with_teacher" (fraction of equal argmax predictions) and "kl_to_teacher"
    (mean KL(p_teacher || p_model) at T = 1). Without labels, "loss" is kl_to_teacher (or None).

    Data that does not fit the model (samples of another shape, a label outside [0, outputs), a
    dataset naming another number of classes) raises UserInputError (edgecomp.data.fit).

    dist (default edgecomp.distributed.current()): the processes that share the evaluation (module
    docstring); the result is the same on every rank.
    """
    check_dataset(data, "evaluation data")
    check_callable(metric, "metric")
    name = getattr(data, "name", None) or "the evaluation data"
    with moved_to(placement.device if placement else None, model, teacher):
        if metric is not None:
            return _evaluate_metric(model, data, batch_size, metric, name, placement)
        return _evaluate_top1(model, data, batch_size, teacher, name, placement, dist or current())


def _batches(data, batch_size: int, placement: Placement | None):
    return epoch_batches(data, batch_size, shuffle=False, generator=torch.Generator(), placement=placement)


def _shard_batches(data, batch_size: int, placement: Placement | None, dist: Dist):
    """This rank's part of the dataset, batched: samples shard_indices(0..n-1) (a DataLoader: every
    world_size-th batch). The parts of all ranks are the dataset, each sample once."""
    if not dist.active:
        yield from _batches(data, batch_size, placement)
    elif isinstance(data, DataLoader):
        for i, batch in enumerate(data):
            if i % dist.world_size == dist.rank:
                yield batch
    else:
        mine = shard_indices(np.arange(len(data)), dist.rank, dist.world_size)
        if len(mine):
            yield from _batches(subset(data, mine), batch_size, placement)


def _evaluate_top1(model: nn.Module, data, batch_size: int, teacher, name: str, placement, dist: Dist) -> dict:
    device = module_device(model)
    non_blocking = bool(placement and placement.pin_memory)  # pinned batches copy asynchronously
    n = 0
    correct1 = correct5 = 0
    ce_sum = kl_sum = 0.0
    agree = 0
    labeled = None
    with eval_mode(model, teacher):
        for x, y in _shard_batches(data, batch_size, placement, dist):
            x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            with runs_on(x.shape[1:], data=name), autocast(placement):
                logits = model(x).float()
            if labeled is None:
                labeled = _has_labels(data, y)
                if labeled:
                    check_num_classes(getattr(data, "classes", None), logits.shape[1], data=name)
            if labeled:
                check_labels(y, logits.shape[1], data=name)
            n += len(x)
            if labeled:
                k = min(5, logits.shape[1])
                top = logits.topk(k, dim=1).indices
                hits = top == y[:, None]
                correct1 += int(hits[:, 0].sum())
                correct5 += int(hits.any(dim=1).sum())
                ce_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            if teacher is not None:
                with autocast(placement):
                    t_logits = teacher(x).float()
                agree += int((t_logits.argmax(1) == logits.argmax(1)).sum())
                kl_sum += float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(t_logits, 1),
                                         reduction="sum", log_target=True))
    if dist.active:  # one all-reduce; counts stay exact in float64 (below 2**53)
        votes = (labeled is True, labeled is False)  # a rank without samples has no say
        sums = all_reduce_sum(np.array([n, correct1, correct5, ce_sum, kl_sum, agree, *votes], dtype=np.float64), dist)
        n, correct1, correct5, agree = (int(round(v)) for v in sums[[0, 1, 2, 5]])
        ce_sum, kl_sum = float(sums[3]), float(sums[4])
        labeled = bool(sums[6] > 0 and sums[7] == 0)
    out: dict = {"n": n, "top1": None, "top5": None, "loss": None}
    if labeled:
        out.update(top1=correct1 / n, top5=correct5 / n, loss=ce_sum / n)
    if teacher is not None:
        out["agreement_with_teacher"] = agree / n
        out["kl_to_teacher"] = kl_sum / n
        if not labeled:
            out["loss"] = out["kl_to_teacher"]
    return out


def _evaluate_metric(model: nn.Module, data, batch_size: int, metric: MetricFn, name: str, placement) -> dict:
    outputs, targets, n = [], [], 0
    device = module_device(model)
    with eval_mode(model):
        for x, y in _batches(data, batch_size, placement):
            x = x.to(device)
            with runs_on(x.shape[1:], data=name), autocast(placement):
                outputs.append(detach_cpu(model(x)))
            targets.append(detach_cpu(y))
            n += len(x)
    value = user_metric(metric, gather(outputs), gather(targets))
    return {"n": n, "metric": value, "top1": None, "top5": None, "loss": None}
