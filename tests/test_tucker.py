"""Tucker-2 factored convolutions: HOSVD/HOOI, exact pair errors, costs, Pareto choices, module, export."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.factor.tucker import (
    conv_output_size,
    dense_costs,
    knapsack_arrays,
    pair_errors,
    pareto_choices,
    rank_grid,
    tucker2_costs,
    tucker2_hooi,
    tucker2_hosvd,
)
from edgecomp.factor.tucker_conv import Tucker2Conv2d

WEIGHTS = "edgecomp/weights/fmnist_cnn.safetensors"


def _kernel(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _brute_force_error(w, r1, r2):
    """||W - W x_0 P_f x_1 P_c||^2 with P from the SVDs of the two unfoldings, projected explicitly."""
    f, c = w.shape[:2]
    uf = np.linalg.svd(w.reshape(f, -1), full_matrices=False)[0][:, :r2]
    uc = np.linalg.svd(np.moveaxis(w, 1, 0).reshape(c, -1), full_matrices=False)[0][:, :r1]
    approx = np.einsum("ab,bcyx,dc->adyx", uf @ uf.T, w, uc @ uc.T)
    return float(np.sum((w - approx) ** 2))


def _fmnist():
    from edgecomp.models import load_model

    return load_model("zoo:fmnist_cnn", WEIGHTS).module


# ---- numerical core -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(9, 7, 3, 2), (20, 2, 3, 1), (3, 11, 1, 3)])
def test_pair_errors_equal_brute_force_and_hosvd(shape):
    w = _kernel(shape)
    f, c = shape[:2]
    errors = pair_errors(w, np.arange(1, c + 1), np.arange(1, f + 1))
    assert errors.shape == (c, f)
    rng = np.random.default_rng(1)
    for r1, r2 in zip(rng.integers(1, c + 1, 12), rng.integers(1, f + 1, 12)):
        exact = _brute_force_error(w, r1, r2)
        assert errors[r1 - 1, r2 - 1] == pytest.approx(exact, rel=1e-9, abs=1e-12 * np.sum(w**2))
        hosvd = tucker2_hosvd(w, int(r1), int(r2))
        assert hosvd.rel_error**2 * np.sum(w**2) == pytest.approx(exact, rel=1e-9, abs=1e-12 * np.sum(w**2))
    assert errors[-1, -1] == 0.0


def test_error_is_not_a_function_of_the_mode_spectra():
    """The tail sums of the two mode spectra only bound the Tucker-2 error from above."""
    w = _kernel((8, 6, 3, 3))
    s0 = np.linalg.svd(w.reshape(8, -1), compute_uv=False)
    s1 = np.linalg.svd(np.moveaxis(w, 1, 0).reshape(6, -1), compute_uv=False)
    r1, r2 = 3, 4
    exact = pair_errors(w, [r1], [r2])[0, 0]
    bound = np.sum(s0[r2:] ** 2) + np.sum(s1[r1:] ** 2)
    assert exact < bound * (1 - 1e-3)


def test_hooi_never_worse_than_hosvd_and_converges():
    w = _kernel((16, 12, 3, 3), seed=3)
    improved = 0
    for r1, r2 in [(2, 3), (5, 4), (8, 10), (12, 16), (1, 1)]:
        hosvd = tucker2_hosvd(w, r1, r2)
        hooi = tucker2_hooi(w, r1, r2, max_iter=200, tol=1e-10)
        assert hooi.rel_error <= hosvd.rel_error + 1e-12
        assert hooi.history[0] == pytest.approx(hosvd.rel_error, rel=1e-12, abs=1e-14)
        assert np.all(np.diff(hooi.history) <= 1e-12), "HOOI's error must not increase"
        assert hooi.iterations < 200 and hooi.history[-2] - hooi.history[-1] <= 1e-10
        for u in (hooi.U_out, hooi.U_in):
            assert np.allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-10)
        assert hooi.core.shape == (r2, r1, 3, 3)
        recon = np.linalg.norm(w - hooi.reconstruct()) / np.linalg.norm(w)
        assert recon == pytest.approx(hooi.rel_error, rel=1e-12)
        improved += hooi.rel_error < hosvd.rel_error - 1e-4
    assert improved >= 2  # HOOI really iterates on generic kernels
    rand = tucker2_hooi(w, 5, 4, init="random", seed=7, max_iter=300, tol=1e-12)
    assert np.all(np.diff(rand.history) <= 1e-12) and rand.history[-1] < rand.history[0]


def test_ranks_and_kernels_are_checked():
    w = _kernel((4, 3, 3, 3))
    for r1, r2 in [(0, 2), (4, 2), (2, 5)]:
        with pytest.raises(ValueError):
            tucker2_hosvd(w, r1, r2)
    with pytest.raises(ValueError):
        tucker2_hooi(w[0], 1, 1)
    with pytest.raises(ValueError):
        pair_errors(w, [4], [1])


# ---- costs --------------------------------------------------------------------------------------

def _count(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """MACs per sample of every Conv2d a forward pass runs, counted by forward hooks."""
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        kh, kw = mod.kernel_size
        total += output[0].numel() * (mod.in_channels // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        out = module(x)
    for h in handles:
        h.remove()
    return total, out


CONV_CASES = [
    # (c, f, kernel, stride, padding, dilation, bias, padding_mode, input HxW)
    (5, 7, (3, 3), (2, 2), (1, 1), (1, 1), True, "zeros", (13, 12)),
    (4, 6, (3, 5), (2, 1), (1, 2), (1, 1), False, "zeros", (12, 10)),
    (6, 8, (3, 3), (1, 1), (2, 2), (2, 2), True, "zeros", (11, 11)),
    (3, 9, (2, 3), (1, 2), (0, 1), (2, 1), True, "reflect", (10, 9)),
    (7, 5, (1, 1), (1, 1), (1, 1), (1, 1), False, "zeros", (6, 6)),  # padding grows the map
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_full_ranks_reproduce_the_conv_and_costs_match_hooks(case):
    c, f, kernel, stride, padding, dilation, bias, mode, (h, w) = case
    torch.manual_seed(0)
    conv = nn.Conv2d(c, f, kernel, stride, padding, dilation, bias=bias, padding_mode=mode)
    x = torch.randn(2, c, h, w)
    ref_macs, ref = _count(conv, x)
    kh, kw = kernel
    assert (ref_macs, sum(p.numel() for p in conv.parameters())) == dense_costs(
        f, c, kh, kw, h, w, stride, padding, dilation, bias=bias)
    assert conv_output_size(h, w, kh, kw, stride, padding, dilation) == tuple(ref.shape[2:])
    for method in ("hosvd", "hooi"):
        full = Tucker2Conv2d.from_conv(conv, c, f, method=method)
        macs, out = _count(full, x)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
    for r1, r2 in [(1, 1), (2, 3), (c, 1)]:
        small = Tucker2Conv2d.from_conv(conv, r1, r2, method="hosvd")
        macs, _ = _count(small, x)
        params = sum(p.numel() for p in small.parameters())
        assert (macs, params) == tucker2_costs(f, c, kh, kw, h, w, stride, padding, dilation, r1, r2, bias=bias)


def test_module_computes_the_factored_kernel_and_refuses_groups():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, padding="same", bias=True).double()
    result = tucker2_hooi(conv.weight.detach().numpy(), 3, 5)
    module = Tucker2Conv2d(conv, result)
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    expected = nn.functional.conv2d(x, torch.as_tensor(result.reconstruct()), conv.bias, padding="same")
    assert torch.allclose(module(x), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="groups"):
        Tucker2Conv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), 2, 2)
    with pytest.raises(ValueError):
        Tucker2Conv2d.from_conv(conv, 9, 2)
    with pytest.raises(ValueError):
        Tucker2Conv2d(nn.Conv2d(8, 12, 5), result)


# ---- choices ------------------------------------------------------------------------------------

def _dominates(a, b):
    """a = (macs, params, error, r1): the rule pareto_choices documents (ties: smaller r1 wins)."""
    le = a[0] <= b[0] and a[1] <= b[1] and a[2] <= b[2]
    return le and (a[0] < b[0] or a[1] < b[1] or a[2] < b[2] or a[3] < b[3])


def test_pareto_keeps_exactly_the_undominated_pairs():
    w = _kernel((7, 6, 3, 3), seed=4)
    h = wd = 9
    args = (h, wd, 2, 1, 1)  # stride 2: MACs and parameters are not proportional, the pruning is 3-D
    choices = pareto_choices(w, *args, multiple=1, max_choices=None)
    assert choices[-1].dense and choices[-1].error == 0.0
    dm, dp = dense_costs(7, 6, 3, 3, *args)
    assert (choices[-1].macs, choices[-1].params) == (dm, dp)
    errs = pair_errors(w, np.arange(1, 7), np.arange(1, 8))
    points = {}
    for r1 in range(1, 7):
        for r2 in range(1, 8):
            m, p = tucker2_costs(7, 6, 3, 3, *args, r1, r2)
            points[(r1, r2)] = (m, p, errs[r1 - 1, r2 - 1], r1)
    dense = (dm, dp, 0.0, 0)  # the dense choice beats any pair it ties with
    expected = {k for k, v in points.items()
                if not _dominates(dense, v) and not any(_dominates(o, v) for o in points.values())}
    got = {(ch.r1, ch.r2) for ch in choices if not ch.dense}
    assert got == expected and len(expected) > 3
    for ch in choices[:-1]:
        assert (ch.macs, ch.params, ch.error) == pytest.approx(points[(ch.r1, ch.r2)][:3], rel=1e-12)


def test_pareto_drops_a_constructed_dominated_pair():
    rng = np.random.default_rng(5)
    # input-mode rank 2: any r1 > 2 keeps no more of W than r1 = 2 and costs more
    w = np.einsum("fbyx,cb->fcyx", rng.standard_normal((6, 2, 3, 3)), rng.standard_normal((8, 2)))
    choices = pareto_choices(w, 8, 8, 1, 1, 1, max_choices=None)
    pairs = {(ch.r1, ch.r2) for ch in choices if not ch.dense}
    assert all(r1 <= 2 for r1, _ in pairs)
    assert (2, 3) in pairs
    e = pair_errors(w, [2, 3], [3])
    assert e[0, 0] == pytest.approx(e[1, 0], abs=1e-9 * np.sum(w**2))  # (3, 3): same error, costs more
    # grid of multiples: only multiples of 4 and the full ranks
    grid = pareto_choices(_kernel((10, 9, 3, 3)), 8, 8, 1, 1, 1, multiple=4, max_choices=None)
    assert {ch.r1 for ch in grid} <= {4, 8, 9} and {ch.r2 for ch in grid} <= {4, 8, 10}
    assert list(rank_grid(9, 4)) == [4, 8, 9]


def test_pareto_handles_a_large_layer_and_thins_to_max_choices():
    """Its speed is a benchmark's business, not a test's: here only that a 256x256 layer's frontier is large."""
    w = _kernel((256, 256, 3, 3), seed=6) * np.linspace(1.0, 0.05, 256)[:, None, None, None]
    choices = pareto_choices(w, 14, 14, 2, 1, 1, max_choices=None)
    assert len(choices) > 1000
    w, choices = w[:64, :48], pareto_choices(w[:64, :48], 14, 14, 2, 1, 1, max_choices=None)
    thinned = pareto_choices(w, 14, 14, 2, 1, 1, max_choices=100)
    assert len(choices) > 101 and len(thinned) == 101
    full = {(ch.r1, ch.r2) for ch in choices}
    assert {(ch.r1, ch.r2) for ch in thinned} <= full
    cheapest = min(choices[:-1], key=lambda ch: ch.macs)
    assert thinned[0] == cheapest


# ---- the reference model ------------------------------------------------------------------------

def test_real_kernel_from_the_reference_model():
    conv = _fmnist().features[3][0]  # 64 -> 128, 3x3
    kernel = conv.weight.detach().double().numpy()
    errs = pair_errors(kernel, [8, 32], [16, 64])
    for (a, r1), (b, r2) in [((0, 8), (0, 16)), ((1, 32), (1, 64))]:
        hosvd = tucker2_hosvd(kernel, r1, r2)
        assert hosvd.rel_error**2 * np.sum(kernel**2) == pytest.approx(errs[a, b], rel=1e-8)
    assert errs[1, 1] < errs[0, 0]
    hooi = tucker2_hooi(kernel, 8, 16, max_iter=3, tol=0.0)
    assert hooi.iterations == 3 and hooi.rel_error < tucker2_hosvd(kernel, 8, 16).rel_error
    choices = pareto_choices(kernel, 14, 14, 1, 1, 1)
    factored = [ch for ch in choices if not ch.dense]
    assert factored and all(ch.macs < choices[-1].macs or ch.params < choices[-1].params for ch in factored)


def test_onnx_export_of_a_tucker_model(tmp_path, single_thread):
    from edgecomp.exporters.convert import convert

    model = copy.deepcopy(_fmnist())
    for index, (r1, r2) in ((1, (8, 16)), (3, (16, 24))):
        model.features[index][0] = Tucker2Conv2d.from_conv(model.features[index][0], r1, r2, method="hosvd")
    result = convert(model, tmp_path / "m.onnx", input_shape=(1, 1, 28, 28))
    assert result.relative_error is not None and result.relative_error <= 1e-4

    import onnx

    ops = [node.op_type for node in onnx.load(str(result.onnx_path)).graph.node]
    assert ops.count("Conv") == 2 + 2 * 3


def test_choices_feed_the_knapsack_under_a_mac_budget():
    from edgecomp.ranks.knapsack import solve_mcknapsack

    net = _fmnist()
    layers = [(net.features[1][0], 28), (net.features[3][0], 14)]  # (conv, input side)
    groups, grids = [], []
    for conv, side in layers:
        kernel = conv.weight.detach().double().numpy()
        groups.append(pareto_choices(kernel, side, side, 1, 1, 1, max_choices=None))
        f, c, kh, kw = kernel.shape
        r1s, r2s = np.arange(1, c + 1), np.arange(1, f + 1)
        macs, _ = tucker2_costs(f, c, kh, kw, side, side, 1, 1, 1, r1s[:, None], r2s[None, :])
        dense_macs, _ = dense_costs(f, c, kh, kw, side, side, 1, 1, 1)
        grids.append((np.append(macs.ravel(), dense_macs).astype(float),
                      np.append(pair_errors(kernel, r1s, r2s).ravel(), 0.0)))
    arrays = [knapsack_arrays(g) for g in groups]
    budget = 0.3 * sum(g[-1].macs for g in groups)
    sol = solve_mcknapsack([a[0] for a in arrays], [a[1] for a in arrays], [a[2] for a in arrays],
                           budget, np.inf, maximize=False, mip_rel_gap=0.0)
    picked = [g[k] for g, k in zip(groups, sol.indices)]
    assert sum(ch.macs for ch in picked) <= budget
    assert not any(ch.dense for ch in picked)
    # brute force over every pair of both layers (unpruned): the pruned knapsack loses nothing
    (m1, e1), (m2, e2) = grids
    order = np.argsort(m2, kind="stable")
    best_e2 = np.minimum.accumulate(e2[order])
    k = np.searchsorted(m2[order], budget - m1, side="right") - 1
    ok = k >= 0
    optimum = float(np.min(e1[ok] + best_e2[k[ok]]))
    assert sol.objective == pytest.approx(optimum, rel=1e-9)
    assert sum(ch.error for ch in picked) == pytest.approx(optimum, rel=1e-9)
