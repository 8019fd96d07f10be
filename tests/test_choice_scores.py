"""COBLA over choice layers: Fisher-weighted scores of every Tucker-2 choice / SVD rank, and the exact
knapsack over them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecomp.compression.choice_scores import (
    _choice_scores,
    _rank_scores,
    fisher_diagonal,
    sample_indices,
    select_choices_by_scores,
    tucker2_reconstructions,
)
from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.data import ArrayDataset, load_dataset, subset
from edgecomp.errors import InfeasibleBudgetError
from edgecomp.graph import analyze_model
from edgecomp.models.zoo import get_zoo_model
from edgecomp.ranks.choices import ChoiceLayer, select_choices_min_error
from edgecomp.ranks.knapsack import layer_candidates

pytestmark = pytest.mark.usefixtures("single_thread")
SHAPE = (1, 1, 28, 28)


@pytest.fixture(scope="module")
def setup():
    model = get_zoo_model("tiny_cnn", seed=0).eval()
    cost = analyze_model(model, SHAPE, "tucker2")
    spectra = compute_spectra(model, cost)
    data = subset(load_dataset("fashion-mnist:train"), 400, seed=2)
    return model, cost, spectra, data


def test_uniform_fisher_scores_are_the_truncation_errors(setup):
    """With F = 2 the score is ||W - W_hat||^2: the ChoiceLayer's HOSVD errors, the SVD tail energies."""
    model, cost, spectra, _ = setup
    problem = build_problem(cost, spectra, math.inf, math.inf)
    conv2, fc = problem.layers[1], problem.layers[2]
    assert isinstance(conv2, ChoiceLayer) and conv2.max_rank > 5
    kernel = model.conv2.weight.detach().double().numpy()
    scores = _choice_scores("conv2", kernel, np.full(kernel.shape, 2.0), conv2, tucker2_reconstructions)
    np.testing.assert_allclose(scores, conv2.errors, rtol=1e-9, atol=1e-12 * conv2.weight_energy)
    w = model.fc.weight.detach().double().numpy()
    ranks = layer_candidates(fc).ranks
    got = _rank_scores(w, np.full(w.shape, 2.0), spectra["fc"], "linear", ranks, fc.max_rank)
    s2 = np.linalg.svd(w, compute_uv=False) ** 2
    np.testing.assert_allclose(got, [s2[r:].sum() if r < fc.max_rank else 0.0 for r in ranks], rtol=1e-9)


def test_fisher_is_batch_size_times_the_mean_squared_batch_gradient(setup):
    model, _, _, data = setup
    idx = np.arange(8)
    fisher = fisher_diagonal(model, ["conv2", "fc"], data, idx, batch_size=4)
    expected = torch.zeros_like(model.fc.weight, dtype=torch.float64)
    for chunk in (idx[:4], idx[4:]):
        x, y = data.get_batch(chunk)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), [model.fc.weight])
        expected += 4 * g.double() ** 2 / 2
    torch.testing.assert_close(fisher["fc"], expected)
    assert fisher["conv2"].shape == model.conv2.weight.shape and bool(torch.all(fisher["conv2"] >= 0))


def test_unlabeled_fisher_samples_labels_from_the_model(setup):
    model, _, _, data = setup
    x, _ = data.get_batch(np.arange(64))
    unlabeled = ArrayDataset(x, None, name="calib")
    a = fisher_diagonal(model, ["fc"], unlabeled, np.arange(64), batch_size=8, seed=3)["fc"]
    b = fisher_diagonal(model, ["fc"], unlabeled, np.arange(64), batch_size=8, seed=3)["fc"]
    assert torch.equal(a, b) and float(a.sum()) > 0  # the distillation loss' own gradient here is 0


def test_scored_knapsack_meets_the_budgets_and_beats_pos_cvx_on_its_objective(setup):
    model, cost, spectra, data = setup
    budget = 0.35 * cost.total_macs
    problem = build_problem(cost, spectra, budget, 0.6 * cost.total_params)
    selection = select_choices_by_scores(problem, model, cost, spectra, data, sample=0.1, seed=1)
    assert problem.feasible(selection.ranks) and selection.method == "cobla"
    info = selection.info
    assert info["sample_size"] == 40 and info["solver_status"] in ("optimal", "trivial")
    for layer, k in zip(problem.layers, selection.ranks):
        scores = info["scores"][layer.name]
        assert scores[-1] == 0.0 and min(scores) >= 0.0
        assert info["chosen_scores"][layer.name] == scores[list(layer_candidates(layer).ranks).index(k)
                                                           if not isinstance(layer, ChoiceLayer) else k - 1]
    # exact: pos-cvx's (feasible) choice scores no better on the summed loss estimate
    pos_cvx = select_choices_min_error(problem).ranks
    total = sum(info["scores"][layer.name][(k - 1) if isinstance(layer, ChoiceLayer)
                                           else list(layer_candidates(layer).ranks).index(k)]
                for layer, k in zip(problem.layers, pos_cvx))
    assert info["predicted_loss_increase"] <= total * (1 + 1e-6)
    assert info["predicted_loss_increase"] == pytest.approx(sum(info["chosen_scores"].values()), rel=1e-9)
    with pytest.raises(InfeasibleBudgetError):
        select_choices_by_scores(problem.with_budgets(10.0, 10.0), model, cost, spectra, data)


def test_sample_indices_are_seeded_subsets():
    pool = np.arange(100, 300)
    a, b = sample_indices(pool, 0.05, 7), sample_indices(pool, 0.05, 7)
    assert a.size == 10 and np.array_equal(a, b) and set(a) <= set(pool) and np.all(np.diff(a) > 0)
    assert sample_indices(pool, 25, 7).size == 25 and sample_indices(pool, 1.0, 7).size == 200
