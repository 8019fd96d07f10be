"""CP at a layer's largest rank: the adaptive ridge stops degenerate (cancelling, huge-norm) terms, so the
top-r truncations of the fit have monotone errors below 1 and the refit at the chosen rank starts well;
the rank cap; the O(R^2) truncation profile."""

import numpy as np
import pytest

from edgecomp.factor.cp import (
    RIDGE_LADDER,
    cp_als,
    cp_rank_cap,
    cp_reconstruct,
    cp_spals,
    refit,
    relative_error,
    truncation_profile,
)
from edgecomp.graph.cost import analyze_model

SPALS_EPS = 0.02


@pytest.fixture(scope="module")
def first_conv():
    """zoo:fmnist_cnn's first conv [32, 1, 3, 3] and its largest CP rank under --scheme cp (8)."""
    from edgecomp.models import load_model

    model = load_model("zoo:fmnist_cnn", "edgecomp/weights/fmnist_cnn.safetensors").module
    rank = {lc.name: lc.decomposition.max_rank for lc in analyze_model(model, (1, 1, 28, 28), "cp").decomposable}
    return model.features[0][0].weight.detach().double().numpy(), rank["features.0.0"]


def _monotone_below_one(profile: np.ndarray) -> bool:
    return bool(profile[0] < 1.0 and np.all(np.diff(profile) <= 1e-9))


def test_plain_als_degenerates_at_the_largest_rank_of_a_real_kernel(first_conv):
    """The defect the ridge fixes (so the next tests can fail): cancelling terms larger than the kernel."""
    kernel, rank = first_conv
    assert rank == 8
    fit = cp_als(kernel, rank, adaptive_ridge=False)
    assert fit.weights.max() > 1.2 * np.linalg.norm(kernel)
    assert truncation_profile(kernel, fit).max() > 1.5


@pytest.mark.parametrize("solver", [cp_als, cp_spals])
def test_no_norm_blow_up_and_monotone_truncations_at_the_largest_rank(first_conv, solver):
    kernel, rank = first_conv
    fit = solver(kernel, rank)
    assert fit.ridge in RIDGE_LADDER  # it degenerated and the ridge was raised
    assert fit.weights.max() < np.linalg.norm(kernel)
    profile = truncation_profile(kernel, fit)
    assert _monotone_below_one(profile), profile
    assert profile[-1] == pytest.approx(fit.relative_error)
    assert fit.relative_error < 0.2


def test_error_at_the_largest_rank_is_below_a_smaller_rank(first_conv):
    kernel, rank = first_conv
    half = cp_als(kernel, rank // 2)
    full = cp_als(kernel, rank)
    assert full.relative_error < half.relative_error - 0.1
    assert truncation_profile(kernel, full)[rank - 1] < truncation_profile(kernel, full)[rank // 2 - 1]


def test_refit_from_the_largest_fit_starts_well_and_matches_a_direct_fit(first_conv):
    kernel, rank = first_conv
    out = refit(kernel, cp_als(kernel, rank), rank // 2)
    assert out.before < 1.0 and out.after <= out.before
    assert out.after < cp_als(kernel, rank // 2).relative_error + 0.01


def test_spals_matches_als_on_noisy_low_rank_with_the_adaptive_ridge():
    rng = np.random.default_rng(11)
    shape, rank = (40, 30, 20), 4
    t = cp_reconstruct(np.ones(rank), [rng.standard_normal((n, rank)) for n in shape])
    e = rng.standard_normal(shape)
    t = t + 0.05 * np.linalg.norm(t) / np.linalg.norm(e) * e
    als, spals = cp_als(t, rank), cp_spals(t, rank, alpha=1.0)
    assert als.ridge == spals.ridge == 1e-9  # well-posed: the ridge stays off
    assert abs(spals.relative_error - als.relative_error) < SPALS_EPS
    assert als.relative_error < 0.052


def test_ranks_past_the_cap_are_weight_zero_terms():
    t = np.random.default_rng(3).standard_normal((5, 2, 3))
    assert cp_rank_cap(t.shape) == 6 and cp_rank_cap((64, 32, 3, 3)) == 288
    capped, over = cp_als(t, 6), cp_als(t, 9)
    assert over.rank == 9 and not over.weights[6:].any() and over.weights[5] > 0
    assert all(a.shape == (n, 9) for a, n in zip(over.factors, t.shape))
    assert over.relative_error == pytest.approx(capped.relative_error, abs=1e-12)
    assert refit(t, over, 8).result.rank == 8


def test_truncation_profile_is_the_exact_error_of_the_top_terms():
    rng = np.random.default_rng(5)
    t = rng.standard_normal((6, 5, 4))
    fit = cp_als(t, 5, max_iter=5, adaptive_ridge=False)
    expected = [relative_error(t, fit.weights[:r], [a[:, :r] for a in fit.factors]) for r in range(1, 6)]
    np.testing.assert_allclose(truncation_profile(t, fit), expected, rtol=1e-10)
