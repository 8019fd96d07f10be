"""LC over choice layers (Tucker-2): the C step recomputes each layer's (r1, r2) choices from its input,
picks the exact knapsack optimum under the budgets and projects onto it; LC ends with a model built at
those choices; fixed Tucker-2 pairs work too."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.data import load_dataset, subset
from edgecomp.errors import UserInputError
from edgecomp.factor.tucker import tucker2_hooi
from edgecomp.factor.tucker_conv import Tucker2Conv2d
from edgecomp.graph import analyze_model
from edgecomp.lc import c_step, compressed_layers, run_lc, tucker2_choices_fn, tucker2_projection
from edgecomp.lc.cstep import budget_template
from edgecomp.models.zoo import get_zoo_model
from edgecomp.ranks.choices import ChoiceLayer, select_choices_min_error

pytestmark = pytest.mark.usefixtures("single_thread")
SHAPE = (1, 1, 28, 28)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(6, 10, 3, padding=1)
        self.fc = nn.Linear(10 * 6 * 6, 7)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _unfolding_rank(x: torch.Tensor, mode: int) -> int:
    m = x.double().movedim(mode, 0).reshape(x.shape[mode], -1)
    return int(torch.linalg.matrix_rank(m, rtol=1e-5))


def test_choice_c_step_is_the_exact_knapsack_projection_of_its_input():
    model = Small()
    cost = analyze_model(model, (1, 6, 6, 6), "tucker2")
    layers = compressed_layers(model, cost)
    assert [(l.name, l.scheme) for l in layers] == [("conv", "tucker2"), ("fc", "linear")]
    gen = torch.Generator().manual_seed(0)
    inputs = {l.name: 3.0 * torch.randn(l.shape, generator=gen) for l in layers}  # not the model's weights
    budget = 0.45 * cost.total_macs
    result = c_step(inputs, layers, problem=budget_template(layers, cost, budget, math.inf),
                    choices_fn=tucker2_choices_fn(cost))
    conv_layer, fc_layer = result.problem.layers
    assert isinstance(conv_layer, ChoiceLayer) and not isinstance(fc_layer, ChoiceLayer)
    assert conv_layer.weight_energy == pytest.approx(float(torch.sum(inputs["conv"].double() ** 2)))
    compute, _ = result.problem.cost(result.selection.ranks)
    assert compute <= budget and result.info["macs"] == compute

    # exact: no (conv choice, fc rank) pair that fits does better on the knapsack's objective
    total_fc = float(np.sum(fc_layer.sigma ** 2))
    fc_err = [float(np.sum(fc_layer.sigma[r:] ** 2)) / total_fc for r in range(1, fc_layer.max_rank + 1)]
    best = min(conv_layer.errors[k - 1] / conv_layer.weight_energy + fc_err[r - 1]
               for k, r in itertools.product(range(1, conv_layer.max_rank + 1), range(1, fc_layer.max_rank + 1))
               if result.problem.feasible([k, r]))
    k, r = (int(v) for v in result.selection.ranks)
    assert conv_layer.errors[k - 1] / conv_layer.weight_energy + fc_err[r - 1] == pytest.approx(best, rel=1e-6)

    # Delta: HOOI at the chosen pair (multilinear ranks (r1, r2), no worse than HOSVD) and the truncated SVD
    r1, r2 = conv_layer.pair(k)
    assert conv_layer.is_factored(k) and result.ranks["conv"] == (r1, r2) and result.ranks["fc"] == r
    delta = result.deltas["conv"]
    assert _unfolding_rank(delta, 0) <= r2 and _unfolding_rank(delta, 1) <= r1
    conv_err = float(torch.sum((inputs["conv"].double() - delta.double()) ** 2))
    assert conv_err <= conv_layer.errors[k - 1] * (1 + 1e-5)
    hooi = tucker2_hooi(inputs["conv"].double().numpy(), r1, r2).reconstruct()
    np.testing.assert_allclose(delta.numpy(), hooi, rtol=1e-5, atol=1e-5)
    assert _unfolding_rank(result.deltas["fc"], 0) == r
    fc_sq = float(torch.sum((inputs["fc"].double() - result.deltas["fc"].double()) ** 2))
    assert result.squared_error == pytest.approx(conv_err + fc_sq, rel=1e-6)


def test_dense_choice_projects_to_the_input():
    model = Small()
    cost = analyze_model(model, (1, 6, 6, 6), "tucker2")
    layer = tucker2_choices_fn(cost)("conv", model.conv.weight)
    x = torch.randn(10, 6, 3, 3)
    assert torch.equal(tucker2_projection("conv", x, layer, layer.max_rank), x)
    assert tucker2_choices_fn(cost)("fc", model.fc.weight) is None


@pytest.fixture(scope="module")
def data():
    return subset(load_dataset("fashion-mnist:train"), 160, seed=1)


def test_lc_over_tucker2_starts_at_pos_cvx_and_builds_its_last_choices(data):
    model = get_zoo_model("tiny_cnn", seed=0).eval()
    cost = analyze_model(model, SHAPE, "tucker2")
    budget = 0.4 * cost.total_macs
    result = run_lc(model, data, scheme="tucker2", input_shape=SHAPE, problem_budgets=(budget, math.inf),
                    n_mu=2, steps_per_mu=4, batch_size=32, progress=False)
    built = analyze_model(result.model, SHAPE, "tucker2")
    assert built.total_macs == result.problem.cost(result.selection.ranks)[0] <= budget
    for layer, k in zip(result.problem.layers, result.selection.ranks):
        module = result.model.get_submodule(layer.name)
        if isinstance(layer, ChoiceLayer) and layer.is_factored(int(k)):
            assert isinstance(module, Tucker2Conv2d) and (module.r1, module.r2) == layer.pair(int(k))
            assert result.layer_ranks[layer.name] == layer.pair(int(k)) == result.ranks[layer.name]
    assert any(isinstance(m, Tucker2Conv2d) for m in result.model.modules())
    # the direct compression (mu = 0, lambda = 0) is pos-cvx's choice on the original weights
    problem = build_problem(cost, compute_spectra(model, cost), budget, math.inf)
    pos_cvx = select_choices_min_error(problem)
    expected = {layer.name: (layer.pair(int(k)) if isinstance(layer, ChoiceLayer) else int(k))
                for layer, k in zip(problem.layers, pos_cvx.ranks)}
    assert result.history[0]["ranks"] == expected


def test_lc_with_fixed_tucker2_pairs(data):
    model = get_zoo_model("tiny_cnn", seed=0).eval()
    result = run_lc(model, data, scheme="tucker2", input_shape=SHAPE, ranks={"conv2": [3, 5]}, n_mu=1,
                    steps_per_mu=2, batch_size=32, progress=False)
    conv2 = result.model.conv2
    assert isinstance(conv2, Tucker2Conv2d) and (conv2.r1, conv2.r2) == (3, 5)
    assert result.ranks == {"conv2": (3, 5)}
    for bad in ({"conv2": 3}, {"conv2": [0, 5]}, {"conv2": [3, 17]}):
        with pytest.raises(UserInputError, match="Tucker-2"):
            run_lc(model, data, scheme="tucker2", input_shape=SHAPE, ranks=bad, n_mu=1, steps_per_mu=1,
                   progress=False)
