"""Accuracy / loss of a model on a dataset, and its agreement with a teacher.

Evaluation runs in eval() mode (BatchNorm uses its running statistics, dropout is off) under
no_grad, so it never changes the model; the caller's train/eval mode is restored afterwards.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from edgecomp.data.fit import check_labels, check_num_classes, runs_on
from edgecomp.models.modes import eval_mode
from edgecomp.finetune.batches import check_dataset, epoch_batches
from edgecomp.finetune.callables import MetricFn, check_callable, detach_cpu, gather, user_metric




def _has_labels(data, labels: torch.Tensor) -> bool:
    flag = getattr(data, "has_labels", None)
    if flag is not None:
        return bool(flag)
    return bool(torch.all(labels >= 0))


@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int = 256, teacher: nn.Module | None = None,
             metric: MetricFn | None = None) -> dict:
    """Metrics of `model` on `data`.

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
    """
    check_dataset(data, "evaluation data")
    check_callable(metric, "metric")
    name = getattr(data, "name", None) or "the evaluation data"
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if metric is not None:
        return _evaluate_metric(model, data, batch_size, metric, device, name)
    n = 0
    correct1 = correct5 = 0
    ce_sum = kl_sum = 0.0
    agree = 0
    labeled = None
    with eval_mode(model, teacher):
        for x, y in epoch_batches(data, batch_size, shuffle=False, generator=torch.Generator()):
            x, y = x.to(device), y.to(device)
            with runs_on(x.shape[1:], data=name):
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
                t_logits = teacher(x).float()
                agree += int((t_logits.argmax(1) == logits.argmax(1)).sum())
                kl_sum += float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(t_logits, 1),
                                         reduction="sum", log_target=True))
    out: dict = {"n": n, "top1": None, "top5": None, "loss": None}
    if labeled:
        out.update(top1=correct1 / n, top5=correct5 / n, loss=ce_sum / n)
    if teacher is not None:
        out["agreement_with_teacher"] = agree / n
        out["kl_to_teacher"] = kl_sum / n
        if not labeled:
            out["loss"] = out["kl_to_teacher"]
    return out


def _evaluate_metric(model: nn.Module, data, batch_size: int, metric: MetricFn, device, name: str) -> dict:
    outputs, targets, n = [], [], 0
    with eval_mode(model):
        for x, y in epoch_batches(data, batch_size, shuffle=False, generator=torch.Generator()):
            x = x.to(device)
            with runs_on(x.shape[1:], data=name):
                outputs.append(detach_cpu(model(x)))
            targets.append(detach_cpu(y))
            n += len(x)
    value = user_metric(metric, gather(outputs), gather(targets))
    return {"n": n, "metric": value, "top1": None, "top5": None, "loss": None}
