"""CP decomposition (exact ALS, SPALS, refit) and the CP-factored convolution built from it."""

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.factor import cp
from edgecomp.factor.cp import cp_als, cp_reconstruct, cp_spals, khatri_rao, leverage_scores, mttkrp, refit, unfold
from edgecomp.factor.cp_conv import CPConv2d, cp_costs

# SPALS must end within this absolute relative error of exact ALS (same rank, same start)
SPALS_EPS = 0.02


def low_rank(shape, rank, noise=0.0, seed=0):
    """sum of `rank` random rank-1 terms, plus Gaussian noise of norm noise * ||signal||."""
    rng = np.random.default_rng(seed)
    signal = cp_reconstruct(np.ones(rank), [rng.standard_normal((n, rank)) for n in shape])
    if noise == 0.0:
        return signal
    e = rng.standard_normal(shape)
    return signal + noise * np.linalg.norm(signal) / np.linalg.norm(e) * e


@pytest.fixture(scope="module")
def reference_kernel():
    from edgecomp.models import load_model

    model = load_model("zoo:fmnist_cnn", "edgecomp/weights/fmnist_cnn.safetensors").module
    return model.features[1][0].weight.detach().double().numpy()  # [64, 32, 3, 3]


def test_mttkrp_and_reconstruct_match_their_definitions():
    rng = np.random.default_rng(1)
    t = rng.standard_normal((4, 5, 3, 6))
    factors = [rng.standard_normal((n, 3)) for n in t.shape]
    for n in range(4):
        kr = khatri_rao([factors[k] for k in range(4) if k != n])
        np.testing.assert_allclose(mttkrp(t, factors, n), unfold(t, n) @ kr, atol=1e-12)
    weights = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(cp_reconstruct(weights, factors),
                               np.einsum("r,ir,jr,kr,lr->ijkl", weights, *factors), atol=1e-12)


def test_leverage_scores_are_the_hat_matrix_diagonal():
    a = np.random.default_rng(2).standard_normal((20, 4))
    a[:, 3] = a[:, 0] + a[:, 1]  # rank 3
    tau = leverage_scores(a)
    np.testing.assert_allclose(tau, np.diag(a @ np.linalg.pinv(a)), atol=1e-10)
    assert tau.sum() == pytest.approx(3.0)


@pytest.mark.parametrize("shape", [(20, 15, 10), (12, 10, 3, 3)])
def test_als_recovers_noisy_low_rank_to_the_noise_level(shape):
    t = low_rank(shape, 4, noise=0.01)
    fit = cp_als(t, 4)
    assert 0.008 < fit.relative_error < 0.0102
    assert fit.relative_error == pytest.approx(np.linalg.norm(t - fit.reconstruct()) / np.linalg.norm(t))
    assert 1.0 - fit.fit_history[-1] == pytest.approx(fit.relative_error, abs=1e-6)
    assert fit.converged and fit.iterations < 100
    assert np.all(np.diff(fit.weights) <= 0)
    for a in fit.factors:
        np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0)


def test_als_is_exact_on_an_exact_low_rank_tensor_from_a_random_start():
    t = low_rank((9, 8, 7), 3, seed=3)
    assert cp_als(t, 3, init="random", seed=0, tol=1e-10, max_iter=500).relative_error < 1e-6


def test_sampled_mttkrp_is_unbiased():
    rng = np.random.default_rng(4)
    t = rng.standard_normal((6, 7, 5))
    factors = [rng.standard_normal((n, 3)) for n in t.shape]
    probs = [cp._probabilities(a) for a in factors]
    exact = mttkrp(t, factors, 1)
    mean = np.mean([cp._sampled_mttkrp(t, factors, probs, 1, 20, rng)[0] for _ in range(4000)], axis=0)
    assert np.abs(mean - exact).max() < 0.05 * np.abs(exact).max()


def test_spals_matches_als_on_noisy_low_rank_with_few_rows():
    t = low_rank((60, 50, 40), 5, noise=0.05)
    als = cp_als(t, 5)
    spals = cp_spals(t, 5, alpha=1.0)
    assert abs(spals.relative_error - als.relative_error) < SPALS_EPS
    assert spals.sampling.samples == cp.default_samples(5, t.shape, 1.0) == np.ceil(25 * np.log(60))
    assert all(d < 0.1 * r for d, r in zip(spals.sampling.distinct_rows, spals.sampling.rows))


def test_spals_matches_als_on_a_reference_conv_kernel(reference_kernel):
    als = cp_als(reference_kernel, 16, max_iter=60)
    spals = cp_spals(reference_kernel, 16, alpha=3.0, max_iter=60)
    assert abs(spals.relative_error - als.relative_error) < SPALS_EPS
    rows, used = spals.sampling.rows, spals.sampling.distinct_rows
    assert sum(used) < 0.5 * sum(rows)  # the spatial modes' 64 * 32 * 3 rows are sampled sparsely


def test_refit_warm_start_improves_the_truncated_fit():
    t = low_rank((15, 12, 10), 6, noise=0.01, seed=6)
    full = cp_als(t, 6)
    out = refit(t, full, 3)
    assert out.result.rank == 3 and out.after == out.result.relative_error
    assert out.after < out.before - 0.01
    # the start was exactly the top three terms
    kept = cp_reconstruct(full.weights[:3], [a[:, :3] for a in full.factors])
    assert out.before == pytest.approx(np.linalg.norm(t - kept) / np.linalg.norm(t))


def test_edge_cases():
    t = low_rank((4, 4, 4), 2)
    for bad in (lambda: cp_als(t, 0), lambda: cp_spals(t, 1.5), lambda: cp_als(t[0], 1),
                lambda: cp_als(np.where(t > 1, np.nan, t), 2), lambda: refit(t, cp_als(t, 2), 3)):
        with pytest.raises(ValueError) as info:
            bad()
        assert isinstance(info.value, UserInputError)
    for solver in (cp_als, cp_spals):
        zero = solver(np.zeros((3, 4, 5)), 2)
        assert zero.relative_error == 0.0 and not zero.weights.any()
        assert not zero.reconstruct().any() and zero.reconstruct().shape == (3, 4, 5)


# (c, f, kernel, stride, padding, dilation, input HxW)
CONV_CASES = [
    (4, 6, (3, 3), 2, 1, 1, (9, 11)),
    (5, 3, (3, 1), (2, 1), (1, 0), 1, (10, 7)),
    (3, 5, (1, 3), (1, 2), (0, 1), 1, (6, 9)),
    (4, 7, (5, 3), (2, 1), (2, 1), (2, 1), (15, 8)),
    (3, 4, (3, 3), 1, "same", 2, (8, 8)),
]


def _conv_with_rank(c, f, kernel, stride, padding, dilation, rank, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, f, kernel, stride, padding, dilation, bias=True)
    kh, kw = conv.kernel_size
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(low_rank((f, c, kh, kw), rank, seed=seed), dtype=torch.float32))
    return conv


@pytest.mark.parametrize("case", CONV_CASES)
def test_cp_conv_reproduces_a_rank_r_conv(case):
    c, f, kernel, stride, padding, dilation, hw = case
    conv = _conv_with_rank(c, f, kernel, stride, padding, dilation, rank=3)
    x = torch.randn(2, c, *hw)
    ref = conv(x)
    factored = CPConv2d.from_conv(conv, 3, tol=1e-12, max_iter=300)
    out = factored(x)
    assert out.shape == ref.shape
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4
    assert factored.relative_error < 1e-5


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[4]])
def test_cp_conv_from_a_spals_fit_reproduces_a_rank_r_conv(case):
    # the control variate makes SPALS exact at the true rank (the sampled residual vanishes); swamps
    # (cases with a size-1 mode) can still stall it near 1e-2, so only well-conditioned cases here
    c, f, kernel, stride, padding, dilation, hw = case
    conv = _conv_with_rank(c, f, kernel, stride, padding, dilation, rank=3)
    x = torch.randn(2, c, *hw)
    out = CPConv2d.from_conv(conv, 3, solver="spals", tol=1e-12, max_iter=300)(x)
    assert ((out - conv(x)).abs().max() / conv(x).abs().max()).item() < 1e-4


def test_cp_conv_at_too_low_a_rank_is_not_exact():
    conv = _conv_with_rank(4, 6, 3, 1, 1, 1, rank=3)
    x = torch.randn(1, 4, 8, 8)
    assert ((CPConv2d.from_conv(conv, 1)(x) - conv(x)).abs().max() / conv(x).abs().max()).item() > 1e-2


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_cp_costs_match_the_built_modules_macs(case):
    c, f, kernel, stride, padding, dilation, hw = case
    conv = _conv_with_rank(c, f, kernel, stride, padding, dilation, rank=2)
    factored = CPConv2d.from_conv(conv, 5)
    macs = []

    def count(module, inputs, output):
        kh, kw = module.kernel_size
        macs.append(output[0].numel() * module.in_channels // module.groups * kh * kw)

    hooks = [m.register_forward_hook(count) for m in factored]
    factored(torch.randn(1, c, *hw))
    for h in hooks:
        h.remove()
    per_term_macs, per_term_params = cp_costs(f, c, *conv.kernel_size, *hw, stride, padding, dilation)
    assert len(macs) == 4 and sum(macs) == 5 * per_term_macs
    assert sum(m.weight.numel() for m in factored) == 5 * per_term_params


def test_grouped_and_non_conv_layers_are_refused():
    with pytest.raises(ValueError, match="groups=2"):
        CPConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), 2)
    with pytest.raises(ValueError, match="Linear"):
        CPConv2d.from_conv(nn.Linear(4, 4), 2)
    with pytest.raises(ValueError, match="solver"):
        CPConv2d.from_conv(nn.Conv2d(4, 4, 3), 2, solver="svd")


def test_onnx_export_of_a_cp_conv_model(tmp_path):
    from edgecomp.exporters.convert import convert

    conv = _conv_with_rank(3, 8, 3, 2, 1, 1, rank=4)
    model = nn.Sequential(CPConv2d.from_conv(conv, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    result = convert(model, tmp_path / "m.onnx", input_shape=(1, 3, 16, 16))
    assert result.onnx_path.is_file()
    assert result.relative_error is not None and result.relative_error < 1e-4
