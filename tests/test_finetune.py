"""Fine-tuning / distillation loop: it learns, distills without labels, keeps the best checkpoint,
leaves BatchNorm statistics alone where it must, and is deterministic."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgecomp.data import ArrayDataset, load_dataset, subset
from edgecomp.errors import UserInputError
from edgecomp.finetune import cosine_lr, distillation_loss, evaluate, train
from edgecomp.models.zoo import get_zoo_model


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def fmnist():
    train_ds = load_dataset("fashion-mnist:train")
    return subset(train_ds, 600, seed=0), subset(load_dataset("fashion-mnist:test"), 300, seed=0)


@pytest.fixture(scope="module")
def teacher(fmnist):
    model = get_zoo_model("tiny_cnn", seed=1)
    train(model, fmnist[0], epochs=4, lr=0.05, batch_size=32, seed=0, progress=False)
    return model.eval()


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_improves_accuracy(fmnist):
    train_ds, test_ds = fmnist
    model = get_zoo_model("tiny_cnn", seed=0)
    before = evaluate(model, test_ds)
    result = train(model, train_ds, epochs=3, lr=0.05, batch_size=32, seed=0, eval_data=test_ds, progress=False)
    after = evaluate(model, test_ds)
    assert before["top1"] < 0.3
    assert after["top1"] > before["top1"] + 0.3
    assert after["loss"] < before["loss"]
    assert result.steps == 3 * (600 // 32)
    assert [h["step"] for h in result.history] == [0, 18, 36, 54]
    assert result.history[-1]["train_loss"] < result.history[1]["train_loss"]
    assert result.best_accuracy == pytest.approx(max(h["eval_accuracy"] for h in result.history))
    assert 0.0 <= after["top1"] <= after["top5"] <= 1.0


def test_distillation_without_labels_increases_agreement(fmnist, teacher):
    train_ds, test_ds = fmnist
    x, _ = train_ds.get_batch(torch.arange(len(train_ds)))
    unlabeled = ArrayDataset(x, None, name="calib")
    assert not unlabeled.has_labels
    student = get_zoo_model("tiny_cnn", seed=5)
    before = evaluate(student, test_ds, teacher=teacher)["agreement_with_teacher"]
    result = train(student, unlabeled, epochs=4, lr=0.05, batch_size=32, seed=0, teacher=teacher,
                   distill_alpha=1.0, eval_data=test_ds, progress=False)
    after = evaluate(student, test_ds, teacher=teacher)
    assert after["agreement_with_teacher"] > before + 0.3
    assert after["agreement_with_teacher"] > 0.6
    assert all("eval_agreement" in h for h in result.history)
    # without labels and without a teacher there is nothing to learn from
    with pytest.raises(UserInputError, match="no labels"):
        train(get_zoo_model("tiny_cnn"), unlabeled, epochs=1, progress=False)
    with pytest.raises(UserInputError, match="distill_alpha=1"):
        train(get_zoo_model("tiny_cnn"), unlabeled, epochs=1, teacher=teacher, distill_alpha=0.5, progress=False)


def test_evaluate_unlabeled_reports_teacher_metrics(fmnist, teacher):
    x, _ = fmnist[1].get_batch(torch.arange(50))
    metrics = evaluate(teacher, ArrayDataset(x, None, name="u"), teacher=teacher)
    assert metrics["top1"] is None and metrics["n"] == 50
    assert metrics["agreement_with_teacher"] == 1.0
    assert metrics["kl_to_teacher"] == pytest.approx(0.0, abs=1e-6)


def test_best_checkpoint_is_kept(fmnist, teacher):
    train_ds, test_ds = fmnist
    # Fine-tuning a good model on wrong labels makes it worse: the best checkpoint is the start.
    x, y = train_ds.get_batch(torch.arange(len(train_ds)))
    wrong = ArrayDataset(x, (y + 1) % 10, name="wrong", num_classes=10)
    model = get_zoo_model("tiny_cnn", seed=1)
    model.load_state_dict(teacher.state_dict())
    start = evaluate(model, test_ds)["top1"]
    result = train(model, wrong, epochs=2, lr=0.05, batch_size=32, seed=0, eval_data=test_ds, progress=False)
    assert result.best_step == 0
    assert result.history[-1]["eval_accuracy"] < start - 0.2
    assert _states_equal(model, teacher)
    # keep_best=False returns the last iterate
    model2 = get_zoo_model("tiny_cnn", seed=1)
    model2.load_state_dict(teacher.state_dict())
    train(model2, wrong, epochs=2, lr=0.05, batch_size=32, seed=0, eval_data=test_ds, keep_best=False, progress=False)
    assert evaluate(model2, test_ds)["top1"] == pytest.approx(result.history[-1]["eval_accuracy"])


def test_batchnorm_statistics(fmnist):
    train_ds, test_ds = fmnist
    model = BNNet()
    model.train()
    bn = model.body[1]
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    evaluate(model, test_ds)
    assert torch.equal(bn.running_mean, mean0) and torch.equal(bn.running_var, var0)
    assert model.training and bn.training  # the caller's mode is restored

    frozen = BNNet()
    w0 = frozen.fc.weight.clone()
    train(frozen, train_ds, epochs=1, lr=0.05, batch_size=32, freeze_bn=True, progress=False)
    assert torch.equal(frozen.body[1].running_mean, mean0)
    assert not torch.equal(frozen.fc.weight, w0)

    live = BNNet()
    train(live, train_ds, epochs=1, lr=0.05, batch_size=32, progress=False)
    assert not torch.equal(live.body[1].running_mean, mean0)


def test_determinism(fmnist):
    train_ds, _ = fmnist
    runs = []
    for seed in (7, 7, 8):
        model = get_zoo_model("tiny_cnn", seed=0)
        train(model, train_ds, epochs=1, lr=0.05, batch_size=32, seed=seed, optimizer="adam", progress=False)
        runs.append(model)
    assert _states_equal(runs[0], runs[1])
    assert not _states_equal(runs[0], runs[2])
    # the caller's RNG stream is not disturbed by training
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train(get_zoo_model("tiny_cnn"), train_ds, epochs=1, max_steps=2, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_max_steps_fractional_epochs_and_bad_input(fmnist):
    train_ds, _ = fmnist
    model = get_zoo_model("tiny_cnn")
    assert train(model, train_ds, epochs=0.5, batch_size=32, progress=False).steps == math.ceil(0.5 * 18)
    assert train(model, train_ds, epochs=5, batch_size=32, max_steps=3, progress=False).steps == 3
    with pytest.raises(UserInputError):
        train(model, train_ds, epochs=0, progress=False)
    with pytest.raises(UserInputError, match="optimizer"):
        train(model, train_ds, epochs=1, optimizer="lbfgs", progress=False)


def test_losses_and_schedule():
    z = torch.randn(8, 10)
    assert float(distillation_loss(z, z, 4.0)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(8, 10)
    # T^2 scaling: for large T, T^2 KL(softmax(t/T) || softmax(z/T)) -> mean-centred squared logit gap / (2 C)
    big = float(distillation_loss(z, t, 100.0))
    d = (t - t.mean(1, keepdim=True)) - (z - z.mean(1, keepdim=True))
    assert big == pytest.approx(float((d**2).sum(1).mean() / (2 * 10)), rel=0.02)
    assert cosine_lr(0.1, 0, 10) == pytest.approx(0.1)
    assert cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    assert cosine_lr(0.1, 10, 10, min_lr=0.01) == pytest.approx(0.01)
    assert cosine_lr(0.1, 0, 10, warmup=2) == pytest.approx(0.05)
