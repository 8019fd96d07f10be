"""LC algorithm: the C step is the truncated SVD, the multiplier/penalty math on problems with known
constrained optima, lr clipping, w -> Delta(Theta) as mu grows, and budget-feasible built models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.data import ArrayDataset, load_dataset, subset
from edgecomp.errors import InfeasibleBudgetError, UserInputError
from edgecomp.factor import FactoredConv2d, FactoredLinear, matricize
from edgecomp.finetune import train
from edgecomp.graph import analyze_model
from edgecomp.lc import (
    build_compressed,
    c_step,
    c_step_input,
    clip_lr,
    compressed_layers,
    converged,
    l_step_lr,
    mu_schedule,
    multiplier_update,
    penalty_target,
    run_lc,
    path_warning,
    penalty_reach,
    reach_mu0,
    sgd_lr,
)
from edgecomp.models.zoo import get_zoo_model

SHAPE = (1, 1, 28, 28)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return subset(load_dataset("fashion-mnist:train"), 400, seed=1), subset(load_dataset("fashion-mnist:test"), 200, seed=1)


@pytest.fixture(scope="module")
def reference(data):
    model = get_zoo_model("tiny_cnn", seed=0)
    train(model, data[0], epochs=3, lr=0.05, batch_size=32, seed=0, progress=False)
    return model.eval()


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 12)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _numpy_truncation(matrix: np.ndarray, r: int) -> tuple[np.ndarray, float]:
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r], float(np.sum(s[r:] ** 2))


@pytest.mark.parametrize("scheme", ["spatial", "channel"])
def test_c_step_is_truncated_svd(scheme):
    model = Small()
    cost = analyze_model(model, (1, 8, 8, 8), scheme)
    layers = compressed_layers(model, cost)
    assert [l.name for l in layers] == ["conv", "fc"] and layers[1].scheme == "linear"
    inputs = {"conv": torch.randn(16, 8, 3, 3), "fc": torch.randn(12, 1024)}
    ranks = {"conv": 5, "fc": 3}
    result = c_step(inputs, layers, ranks=ranks)
    total = 0.0
    for layer in layers:
        x = inputs[layer.name]
        if layer.scheme == "spatial":  # M[(c,i),(f,j)] = W[f,c,i,j]
            m = x.numpy().transpose(1, 2, 0, 3).reshape(8 * 3, 16 * 3)
        else:
            m = x.numpy().reshape(x.shape[0], -1)
        expected, tail = _numpy_truncation(m.astype(np.float64), ranks[layer.name])
        got = matricize(result.deltas[layer.name], layer.scheme).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert np.linalg.matrix_rank(got, tol=1e-4) == ranks[layer.name]
        assert result.deltas[layer.name].shape == x.shape
        total += tail
    assert result.squared_error == pytest.approx(total, rel=1e-9)
    direct = sum(float(torch.sum((inputs[n] - result.deltas[n]) ** 2)) for n in inputs)
    assert direct == pytest.approx(total, rel=1e-4)


def test_built_model_is_delta_theta():
    model = Small().eval()
    cost = analyze_model(model, (1, 8, 8, 8), "spatial")
    layers = compressed_layers(model, cost)
    result = c_step({l.name: model.get_submodule(l.name).weight.detach() for l in layers}, layers,
                    ranks={"conv": 4, "fc": 2})
    built, factored = build_compressed(model, layers, result, "spatial")
    assert factored == {"conv": 4, "fc": 2}
    assert isinstance(built.conv, FactoredConv2d) and isinstance(built.fc, FactoredLinear)
    dense = Small().eval()
    with torch.no_grad():
        dense.conv.weight.copy_(result.deltas["conv"])
        dense.fc.weight.copy_(result.deltas["fc"])
    x = torch.randn(3, 8, 8, 8)
    torch.testing.assert_close(built(x), dense(x), atol=1e-4, rtol=1e-4)
    assert isinstance(model.conv, nn.Conv2d)  # the input model is untouched


def test_schedule_and_lr_clipping():
    np.testing.assert_allclose(mu_schedule(1e-3, 2.0, 4), [1e-3, 2e-3, 4e-3, 8e-3])
    assert clip_lr(0.1, 100.0) == pytest.approx(0.01)
    assert clip_lr(0.001, 100.0) == pytest.approx(0.001)
    assert clip_lr(0.1, 0.0) == 0.1
    assert l_step_lr(0.1, 2, 1.0, lr_decay=0.5) == pytest.approx(0.025)
    assert l_step_lr(0.1, 0, 50.0) == pytest.approx(0.02)
    assert converged(1e-4, 1.0, 1e-3) and not converged(1e-2, 1.0, 1e-3)
    # cosine over the whole run, clipped to 1/mu
    assert sgd_lr(0.1, 0, 100, 0, 1.0) == pytest.approx(0.1)
    assert sgd_lr(0.1, 50, 100, 5, 1.0) == pytest.approx(0.05)
    assert sgd_lr(0.1, 50, 100, 5, 40.0) == pytest.approx(0.025)
    assert sgd_lr(0.1, 10, 100, 2, 1.0, schedule="exponential", lr_decay=0.5) == pytest.approx(0.025)
    with pytest.raises(ValueError):
        sgd_lr(0.1, 0, 10, 0, 1.0, schedule="step")
    for bad in [(0.0, 1.5, 3), (1e-3, 1.0, 3), (1e-3, 1.5, 0)]:
        with pytest.raises(ValueError):
            mu_schedule(*bad)


def _al_quadratic(b: np.ndarray, project, mus, variant: str, l_iters: int = 1):
    """LC on L(w) = 1/2 ||w - b||^2 with an exact L step: w = (b + mu * target) / (1 + mu)."""
    w = b.copy()
    delta = project(w)
    lam = np.zeros_like(b)
    for mu in mus:
        for _ in range(l_iters):
            target = penalty_target(delta, lam, mu)
            w = (b + mu * target) / (1 + mu)
            delta = project(c_step_input(w, lam, mu))
            if variant == "al":
                lam = multiplier_update(lam, mu, w, delta)
    return w, delta, lam


def test_augmented_lagrangian_on_a_subspace_constraint():
    """min 1/2||w - b||^2 s.t. w in span(B): w* = P b, lambda* = grad L(w*) = w* - b (KKT)."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((6, 2)))[0]
    project = lambda v: basis @ (basis.T @ v)  # noqa: E731
    b = rng.standard_normal(6)
    w_star = project(b)
    # constant mu: AL converges to the constrained optimum and the right multiplier ...
    w, delta, lam = _al_quadratic(b, project, [1.0] * 60, "al")
    np.testing.assert_allclose(w, w_star, atol=1e-8)
    np.testing.assert_allclose(delta, w_star, atol=1e-8)
    np.testing.assert_allclose(lam, w_star - b, atol=1e-8)
    # ... the quadratic penalty does not: it stays off the constraint by ||(I-P) b|| / (1 + mu)
    w_qp, delta_qp, lam_qp = _al_quadratic(b, project, [1.0] * 60, "qp")
    assert np.all(lam_qp == 0)
    np.testing.assert_allclose(np.linalg.norm(w_qp - delta_qp), np.linalg.norm(b - w_star) / 2, rtol=1e-6)
    # with mu -> infinity the penalty method converges too, at rate 1/mu
    w_qp, delta_qp, _ = _al_quadratic(b, project, mu_schedule(1.0, 2.0, 30), "qp")
    assert np.linalg.norm(w_qp - w_star) < 1e-6


def test_augmented_lagrangian_low_rank_quadratic():
    """min 1/2||W - B||_F^2 s.t. rank(W) <= 1: the optimum is the truncated SVD of B (Eckart-Young)."""
    rng = np.random.default_rng(1)
    b = rng.standard_normal((5, 4))
    rank1 = lambda m: _numpy_truncation(m, 1)[0]  # noqa: E731
    expected = rank1(b)
    # AL at a constant mu = 1 reaches the optimum and its KKT multiplier lambda* = grad L = W* - B ...
    w, delta, lam = _al_quadratic(b, rank1, [1.0] * 100, "al")
    np.testing.assert_allclose(delta, expected, atol=1e-10)
    np.testing.assert_allclose(w, expected, atol=1e-10)
    np.testing.assert_allclose(lam, expected - b, atol=1e-10)
    # ... the quadratic penalty needs mu -> infinity
    w, delta, lam = _al_quadratic(b, rank1, mu_schedule(0.1, 1.5, 40), "qp")
    np.testing.assert_allclose(delta, expected, atol=1e-10)
    assert np.linalg.norm(w - delta) < 1e-5 and np.all(lam == 0)


@pytest.mark.filterwarnings("ignore:LC:UserWarning")
def test_w_converges_to_delta_as_mu_grows(reference, data):
    for variant in ("al", "qp"):
        result = run_lc(reference, data[0], scheme="spatial", input_shape=SHAPE, ranks={"conv2": 3, "fc": 3},
                        mu0=1e-2, a=4.0, n_mu=6, steps_per_mu=10, lr=0.05, batch_size=32, variant=variant,
                        tol=0.0, lr_schedule="exponential", progress=False)
        dist = [h["relative_distance"] for h in result.history]
        assert len(dist) == 7 and dist[0] > 0.1
        assert all(later < earlier for earlier, later in zip(dist[2:], dist[3:])), dist
        assert dist[-1] < 0.08 * dist[0], dist
        for h in result.history[1:]:
            assert h["lr"] == h["lr_end"] == pytest.approx(min(0.05 * 0.98 ** (h["step"] - 1), 1 / h["mu"]))
        assert result.ranks == {"conv2": 3, "fc": 3}
        assert not result.converged


@pytest.mark.filterwarnings("ignore:LC:UserWarning")
def test_tol_stops_early(reference, data):
    result = run_lc(reference, data[0], scheme="channel", input_shape=SHAPE, ranks={"fc": 8},
                    mu0=1.0, a=4.0, n_mu=10, steps_per_mu=5, lr=0.05, batch_size=32, tol=5e-2, progress=False)
    assert result.converged and len(result.history) < 11
    assert result.history[-1]["relative_distance"] <= 5e-2


@pytest.mark.filterwarnings("ignore:LC:UserWarning")
def test_budget_selected_ranks_are_feasible(reference, data):
    cost = analyze_model(reference, SHAPE, "spatial")
    for fraction in (0.4, 0.9):
        budgets = (fraction * cost.total_macs, fraction * cost.total_params)
        result = run_lc(reference, data[0], scheme="spatial", input_shape=SHAPE, problem_budgets=budgets,
                        mu0=1e-2, a=2.0, n_mu=3, steps_per_mu=5, lr=0.05, batch_size=32, progress=False,
                        eval_data=data[1])
        for h in result.history:
            assert h["macs"] <= budgets[0] and h["params"] <= budgets[1]
            assert 0.0 <= h["eval_accuracy"] <= 1.0
        built = analyze_model(result.model, SHAPE, "spatial")
        assert built.total_macs <= budgets[0] and built.total_params <= budgets[1]
        assert built.total_macs == pytest.approx(result.history[-1]["macs"])
        assert built.total_params == pytest.approx(result.history[-1]["params"])
        for name, rank in result.layer_ranks.items():
            module = result.model.get_submodule(name)
            if name in result.ranks:
                assert isinstance(module, (FactoredConv2d, FactoredLinear)) and module.rank == rank
            else:  # at or above break-even: left unfactored at full rank
                assert isinstance(module, (nn.Conv2d, nn.Linear))
    with pytest.raises(InfeasibleBudgetError):
        run_lc(reference, data[0], scheme="spatial", input_shape=SHAPE, problem_budgets=(1000, 100),
               n_mu=1, steps_per_mu=1, progress=False)


@pytest.mark.filterwarnings("ignore:LC:UserWarning")
def test_unlabeled_data_distills_from_the_reference(reference, data):
    x, _ = data[0].get_batch(torch.arange(128))
    result = run_lc(reference, ArrayDataset(x, None, name="calib"), scheme="spatial", input_shape=SHAPE,
                    ranks={"conv2": 4}, a=2.0, n_mu=2, steps_per_mu=4, lr=0.05, batch_size=32, progress=False)
    assert result.history[-1]["loss"] >= 0 and result.ranks == {"conv2": 4}
    # mu0 = None: penalty reach 1 in the first L step, mu0 = (1 - momentum) / (lr * steps_per_mu)
    assert [h["mu"] for h in result.history[1:]] == pytest.approx([0.5, 1.0])


def test_warns_when_mu_is_too_large(reference, data):
    with pytest.warns(UserWarning, match="mu0 is too large"):
        result = run_lc(reference, data[0], scheme="spatial", input_shape=SHAPE, ranks={"conv2": 2},
                        mu0=1e3, a=1.5, n_mu=2, steps_per_mu=5, batch_size=32, momentum=0.0, progress=False)
    assert result.warning and result.history[1]["relative_distance"] < 0.1 * result.history[0]["relative_distance"]
    assert path_warning(1.0, [0.5, 0.2, 0.1]) is None
    assert "too large" in path_warning(1.0, [0.05, 0.01])
    assert "too short" in path_warning(1.0, [0.9, 1.3, 0.5])
    assert penalty_reach(0.01, 0.1, 100, momentum=0.9) == pytest.approx(1.0)
    assert reach_mu0(0.01, 100, momentum=0.9) == pytest.approx(0.1)


def test_bad_input(reference, data):
    kwargs = dict(scheme="spatial", input_shape=SHAPE, n_mu=1, steps_per_mu=1, progress=False)
    with pytest.raises(UserInputError, match="exactly one"):
        run_lc(reference, data[0], **kwargs)
    with pytest.raises(UserInputError, match="exactly one"):
        run_lc(reference, data[0], ranks={"fc": 2}, problem_budgets=(1e9, 1e9), **kwargs)
    with pytest.raises(UserInputError, match="rank must be"):
        run_lc(reference, data[0], ranks={"fc": 11}, **kwargs)
    with pytest.raises(UserInputError, match="cannot compress"):
        run_lc(reference, data[0], ranks={"nope": 2}, **kwargs)
    with pytest.raises(UserInputError, match="variant"):
        run_lc(reference, data[0], ranks={"fc": 2}, variant="admm", **kwargs)
    with pytest.raises(UserInputError, match="growth factor"):
        run_lc(reference, data[0], ranks={"fc": 2}, a=0.9, **{k: v for k, v in kwargs.items()})
