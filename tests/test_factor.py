"""Factored layers: exact reconstruction at full rank and exact per-rank costs."""

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.factor import FactoredConv2d, FactoredLinear, factored_skeleton, factorize_model
from edgecomp.graph import analyze_model, trace_layers

CONV_CASES = [
    # (c, f, kernel, stride, padding, dilation, bias, input HxW)
    (3, 8, 3, 1, 1, 1, True, (9, 11)),
    (4, 6, (3, 5), (2, 1), (1, 2), 1, False, (12, 10)),
    (5, 7, 3, 2, 2, 2, True, (13, 13)),
    (6, 4, (1, 3), 1, (0, 1), 1, True, (8, 8)),  # 1xk kernel: falls back to the channel scheme
    (6, 9, 1, 2, 0, 1, True, (8, 8)),  # 1x1 conv: linear scheme
]


def _net(c, f, kernel, stride, padding, dilation, bias):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, f, kernel, stride, padding, dilation, bias=bias)).double()


@pytest.mark.parametrize("scheme", ["spatial", "channel"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_full_rank_factored_conv_reproduces_output(scheme, case):
    c, f, kernel, stride, padding, dilation, bias, hw = case
    net = _net(c, f, kernel, stride, padding, dilation, bias)
    x = torch.randn(2, c, *hw, dtype=torch.float64)
    cost = analyze_model(net, (1, c, *hw), scheme)
    dec = cost.layers[0].decomposition
    full = factorize_model(net, {"0": dec.max_rank}, scheme)
    assert isinstance(full[0], FactoredConv2d)
    ref, out = net(x), full(x)
    assert out.shape == ref.shape
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5


def test_full_rank_factored_linear_reproduces_output():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 12)).double()
    x = torch.randn(5, 20, dtype=torch.float64)
    full = factorize_model(net, {"0": 12}, "spatial")
    assert isinstance(full[0], FactoredLinear)
    assert (full(x) - net(x)).abs().max() / net(x).abs().max() < 1e-5


def test_truncation_error_equals_dropped_singular_values():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(30, 16, bias=False)).double()
    sigma = torch.linalg.svdvals(net[0].weight)
    for r in (1, 5, 10):
        f = factorize_model(net, {"0": r}, "channel")
        w = f[0][1].weight @ f[0][0].weight
        err = torch.linalg.norm(w - net[0].weight) ** 2
        assert torch.isclose(err, (sigma[r:] ** 2).sum(), rtol=1e-9)


@pytest.mark.parametrize("scheme", ["spatial", "channel"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_per_rank_costs_are_exact(scheme, case):
    """MACs/params of the built factored layer at rank r equal r x coefficient (+ bias)."""
    c, f, kernel, stride, padding, dilation, bias, hw = case
    net = _net(c, f, kernel, stride, padding, dilation, bias)
    dec = analyze_model(net, (1, c, *hw), scheme).layers[0].decomposition
    for r in (1, 2, dec.max_rank):
        built = factored_skeleton(net, {"0": r}, scheme)
        layers = trace_layers(built, (1, c, *hw))
        macs = sum(layer.macs for layer in layers)
        params = sum(p.numel() for p in built.parameters())
        assert macs == r * dec.macs_per_rank
        assert params == r * dec.params_per_rank + dec.bias_params


def test_masks_and_scales_select_components():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1)).double()
    keep = np.array([0, 2, 5])
    scales = np.array([1.0, 0.5, 0.25])
    f = factorize_model(net, {"0": 3}, "channel", components={"0": keep}, scales={"0": scales})
    from edgecomp.factor import matricize, svd_factors

    spec = svd_factors(net[0].weight, "channel")
    expected = (spec.P[:, keep] * torch.tensor(scales, dtype=torch.float64)) @ spec.V[:, keep].T
    got = matricize(torch.einsum("fr,rcij->fcij", f[0][1].weight[:, :, 0, 0], f[0][0].weight), "channel")
    assert torch.allclose(got, expected, atol=1e-12)


def test_grouped_and_depthwise_convs_are_left_alone_with_reason():
    net = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 16, 3))
    cost = analyze_model(net, (1, 8, 16, 16))
    reasons = [lc.skip_reason for lc in cost.layers]
    assert "depthwise" in reasons[0] and "grouped" in reasons[1] and reasons[2] == ""
    assert [lc.name for lc in cost.decomposable] == ["2"]


def test_tiny_layer_is_too_small_to_gain():
    net = nn.Sequential(nn.Linear(2, 2))
    lc = analyze_model(net, (1, 2)).layers[0]
    assert lc.decomposition is None and "too small" in lc.skip_reason


def test_break_even_rank_matches_built_costs():
    net = _net(16, 32, 3, 1, 1, 1, True)
    dec = analyze_model(net, (1, 16, 8, 8), "spatial").layers[0].decomposition
    be = dec.break_even_rank
    assert (be - 1) * dec.macs_per_rank < dec.original_macs
    assert (be - 1) * dec.params_per_rank + dec.bias_params < dec.original_params
    assert be * dec.macs_per_rank >= dec.original_macs or be * dec.params_per_rank + dec.bias_params >= dec.original_params
