"""The user's own training loop, loss and metric on a regression model (MSE, float targets), where
cross-entropy and top-1 do not apply: LC's L step, COBLA's loss oracle, fine-tuning and evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import Budgets, FinetuneOptions, LCOptions, compress
from edgecomp.errors import UserInputError
from edgecomp.finetune import evaluate, train
from edgecomp.graph import analyze_model
from edgecomp.lc import run_lc
from edgecomp.runtime.accuracy import accuracy_report

SHAPE = (1, 8)
pytestmark = pytest.mark.usefixtures("single_thread")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def neg_mse(outputs, targets) -> float:
    """Higher is better: minus the mean squared error over the whole set."""
    return -float(F.mse_loss(torch.as_tensor(outputs), torch.as_tensor(targets)))


def _mse(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return float(F.mse_loss(model(x), y))


def mse_loop(data: TensorDataset, lr: float = 0.01, log: list | None = None, adam: bool = False):
    """A user loop: SGD (momentum 0.9, lr clipped to 1/mu) or Adam on MSE + penalty_fn(), `steps` batches."""

    def train_fn(model, penalty_fn, steps):
        if adam:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=min(lr, penalty_fn.max_lr), momentum=0.9)
        gen = torch.Generator().manual_seed(len(log) if log is not None else 0)
        start = penalty_fn()
        for _ in range(steps):
            idx = torch.randint(len(data), (32,), generator=gen)
            x, y = data[idx]
            loss = F.mse_loss(model(x), y) + penalty_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if log is not None:
            log.append({"steps": steps, "start": start, "end": float(penalty_fn().detach()), "model": model})

    return train_fn


@pytest.fixture(scope="module")
def regression():
    """y = x A + noise with A of rank 3, and a reference net fitted to it (a few hundred Adam steps)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=gen) @ torch.randn(3, 4, generator=gen)
    x = torch.randn(256, 8, generator=gen)
    data = TensorDataset(x, x @ a + 0.05 * torch.randn(256, 4, generator=gen))
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        loss = F.mse_loss(model(data.tensors[0]), data.tensors[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), data


def _budgets(model: nn.Module, fraction: float) -> Budgets:
    cost = analyze_model(model, SHAPE, "spatial")
    return Budgets(fraction * cost.total_macs, fraction * cost.total_params * 4, "fp32")


def _within(result, budgets: Budgets) -> bool:
    built = analyze_model(result.model, SHAPE, "spatial")
    return built.total_macs <= budgets.macs and built.total_params <= budgets.params and bool(result.factored)


@pytest.mark.filterwarnings("ignore:LC:UserWarning")
def test_lc_l_step_is_the_users_loop(regression):
    model, data = regression
    budgets = _budgets(model, 0.6)
    log: list[dict] = []
    lc = LCOptions(n_mu=4, steps_per_mu=20, train_fn=mse_loop(data, log=log))
    result = compress(model, SHAPE, budgets, method="lc", data=None, lc=lc)  # the loop brings its own data
    assert _within(result, budgets)
    assert [entry["steps"] for entry in log] == [20] * 4
    assert all(entry["start"].requires_grad and float(entry["start"].detach()) > 0 for entry in log)
    assert all(entry["end"] < float(entry["start"].detach()) for entry in log), log  # the penalty pulls w to Delta(Theta)
    history = result.selection.info["lc_history"]
    assert all(h["loss"] is None for h in history[1:])
    assert history[-1]["relative_distance"] < 0.5 * history[0]["relative_distance"]
    assert _mse(result.model, data) < 3 * _mse(model, data)  # near the reference (DC alone: 3x, LC: 1.6x)

    # penalty_fn is mu/2 ||w - target||^2 over the compressed weights only: its gradient is mu (w - target)
    probe = {}

    def grads(net, penalty_fn, steps):
        first, bias = net[2].weight, net[2].bias
        g_w, g_b = torch.autograd.grad(penalty_fn(), [first, bias], allow_unused=True)
        probe.update(mu=penalty_fn.mu, g_w=g_w, g_b=g_b, value=float(penalty_fn().detach()), w=first.detach().clone())

    run_lc(model, None, scheme="spatial", input_shape=SHAPE, ranks={"2": 3}, n_mu=1, steps_per_mu=5, train_fn=grads,
           progress=False)
    assert probe["g_b"] is None and probe["g_w"].abs().sum() > 0
    target = probe["w"] - probe["g_w"] / probe["mu"]
    assert probe["value"] == pytest.approx(probe["mu"] / 2 * float(((probe["w"] - target) ** 2).sum()), rel=1e-5)
    assert torch.linalg.matrix_rank(target.double(), atol=1e-5) == 3  # the direct compression at rank 3


def test_cobla_uses_the_users_loss(regression):
    model, data = regression
    budgets = _budgets(model, 0.6)
    calls = []

    def loss_fn(net, batch):
        x, y = batch
        calls.append(len(x))
        return F.mse_loss(net(x), y)

    options = CoblaOptions(max_iter=3, sample=64, draws=2, batch_size=32, seed=1)
    result = compress(model, SHAPE, budgets, method="cobla", data=data, cobla=options, loss_fn=loss_fn)
    assert _within(result, budgets)
    assert calls and max(calls) <= 32 and result.selection.info["oracle_calls"] >= 3
    assert math.isfinite(result.selection.info["sqp_loss"])
    # a loss that does not come from the model's outputs has no gradient: a clear error, not zeros
    with pytest.raises(UserInputError, match="no gradient"):
        compress(model, SHAPE, budgets, method="cobla", data=data, cobla=options,
                 loss_fn=lambda net, batch: F.mse_loss(net(batch[0]).detach(), batch[1]))


def test_finetune_with_the_users_loop_and_metric(regression):
    model, data = regression
    budgets = _budgets(model, 0.5)
    log: list[dict] = []
    before = compress(model, SHAPE, budgets, method="pos-cvx")
    options = FinetuneOptions(epochs=10, train_fn=mse_loop(data, lr=1e-3, log=log, adam=True), metric=neg_mse)
    result = compress(model, SHAPE, budgets, method="pos-cvx", data=data, finetune=options)
    assert len(log) == 1 and log[0]["steps"] == 10 * (230 // 128)  # the built-in loop's count (230 train samples)
    assert float(log[0]["start"]) == 0.0 and log[0]["start"].ndim == 0
    info = result.finetune
    assert info["mode"] == "train_fn" and info["metric"] == "metric"
    assert [h["step"] for h in info["curve"]] == [0, info["steps"]]
    assert info["best_heldout"] == max(h["eval_metric"] for h in info["curve"])
    assert _mse(result.model, data) < _mse(before.model, data)
    assert result.macs == before.macs  # fine-tuning keeps the structure

    # a loop that makes the model worse: the held-out metric keeps the starting weights
    def ruin(net, penalty_fn, steps):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))

    worse = compress(model, SHAPE, budgets, method="pos-cvx", data=data,
                     finetune=FinetuneOptions(train_fn=ruin, metric=neg_mse))
    assert worse.finetune["best_step"] == 0
    assert _mse(worse.model, data) == pytest.approx(_mse(before.model, data))
    # without data the loop needs max_steps
    net = _net(1)
    assert train(net, None, train_fn=mse_loop(data), max_steps=4, progress=False).steps == 4
    with pytest.raises(UserInputError, match="max_steps"):
        train(net, None, train_fn=mse_loop(data), progress=False)


def test_user_metric_is_reported(regression):
    model, data = regression
    seen = []

    def metric(outputs, targets):
        seen.append((outputs.shape, targets.shape))
        return neg_mse(outputs, targets)

    report = evaluate(model, data, batch_size=100, metric=metric)
    assert seen == [((256, 4), (256, 4))]  # once, on the whole set gathered over 3 batches
    assert report["metric"] == pytest.approx(-_mse(model, data), rel=1e-5)
    assert report["top1"] is None and report["n"] == 256
    # LC's history reports it on eval_data
    result = run_lc(model, None, scheme="spatial", input_shape=SHAPE, ranks={"2": 4}, n_mu=1, steps_per_mu=2,
                    train_fn=mse_loop(data), eval_data=data, metric=neg_mse, progress=False)
    assert all(h["eval_accuracy"] <= 0 for h in result.history)
    assert result.history[0]["eval_accuracy"] < -_mse(model, data)  # direct compression at rank 4 loses accuracy
    # the target-side report (numpy outputs) takes the same metric
    outputs = model(data.tensors[0]).detach().numpy()
    on_target = accuracy_report(outputs, data.tensors[1].numpy(), metric=neg_mse)
    assert on_target["top1"] is None and on_target["samples"] == 256
    assert on_target["metric"] == pytest.approx(report["metric"], rel=1e-5)
    with pytest.raises(UserInputError, match="number"):
        evaluate(model, data, metric=lambda o, t: "good")
    np.testing.assert_allclose(accuracy_report(np.eye(3), np.arange(3))["top1"], 1.0)  # default stays top-1
