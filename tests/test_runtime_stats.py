"""Latency statistics: percentiles, order-statistic confidence bounds, t-intervals, robust-CV flagging,
time-block sectioning and the MLPerf early-stopping sample counts."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from edgecomp.errors import UserInputError
from edgecomp.runtime import stats


@pytest.mark.parametrize("percentile, expected", [(90, 64), (99, 662), (50, 11), (95, 130)])
def test_min_samples_reproduce_mlperf_counts(percentile, expected):
    # 64 and 662 are what LoadGen prints ("Processed at least 64 queries" / "662 queries")
    assert stats.min_samples_for_percentile(percentile, 0.99) == expected


def test_min_samples_grow_with_confidence():
    assert stats.min_samples_for_percentile(90, 0.95) < stats.min_samples_for_percentile(90, 0.99)


@pytest.mark.parametrize("n, discarded", [(2048, 172), (2116, 178)])
def test_mlperf_estimate_discards_like_loadgen(n, discarded):
    # LoadGen logs: "Processed at least 64 queries (2048). Would discard 172 highest latency queries."
    x = np.arange(n, dtype=float)  # sorted, distinct: the estimate's index is its value
    estimate = stats.mlperf_early_stopping_estimate(x, 90)
    assert estimate == x[n - 1 - discarded]


def test_mlperf_estimate_needs_minimum_samples():
    assert math.isinf(stats.mlperf_early_stopping_estimate(np.ones(63), 90))
    assert stats.mlperf_early_stopping_estimate(np.arange(64.0), 90) == 63.0


def test_upper_bound_rank_matches_binomial_definition():
    # the maximum bounds p90 at 99% once 1 - 0.9^n >= 0.99, i.e. from n = 44
    assert stats.upper_bound_rank(44, 90, 0.99) == 44
    assert stats.upper_bound_rank(43, 90, 0.99) is None
    for n in (64, 100, 1000):
        k = stats.upper_bound_rank(n, 90, 0.99)
        assert sps.binom.cdf(k - 1, n, 0.9) >= 0.99
        assert sps.binom.cdf(k - 2, n, 0.9) < 0.99  # smallest such k
        j = stats.lower_bound_rank(n, 90, 0.99)
        assert sps.binom.cdf(j - 1, n, 0.9) <= 0.01
        assert j == n or sps.binom.cdf(j, n, 0.9) > 0.01  # largest such k


def test_order_statistic_bounds_have_their_coverage():
    rng = np.random.default_rng(0)
    trials, n, p = 4000, 100, 90
    samples = np.sort(rng.exponential(size=(trials, n)), axis=1)
    q_true = -math.log(1 - p / 100)
    k_up = stats.upper_bound_rank(n, p, 0.95)
    k_lo = stats.lower_bound_rank(n, p, 0.95)
    upper_covers = np.mean(samples[:, k_up - 1] >= q_true)
    lower_covers = np.mean(samples[:, k_lo - 1] <= q_true)
    # exact binomial coverage is >= 0.95 (discrete); allow Monte Carlo error of ~3 sigma
    assert upper_covers >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / trials)
    assert lower_covers >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / trials)
    # and the bounds are not trivially loose: the upper bound is not the maximum
    assert k_up < n


def test_percentile_bounds_on_too_few_samples_are_infinite():
    assert math.isinf(stats.percentile_upper_bound(np.arange(10.0), 99, 0.99))
    # P(Binom(10, .99) <= 8) = 0.0043 <= 0.01 < P(<= 9): the 9th order statistic is the lower bound
    assert stats.percentile_lower_bound(np.arange(10.0), 99, 0.99) == 8.0
    assert stats.percentile_lower_bound(np.arange(3.0), 10, 0.99) == -math.inf


def test_summarize_point_estimates_and_intervals():
    rng = np.random.default_rng(1)
    x = 5.0 + rng.gamma(2.0, 0.1, size=700)
    s = stats.summarize(x, batch_size=4, cv_threshold=0.10)
    assert s.n == 700 and s.batch_size == 4
    assert s.min == x.min() and s.max == x.max()
    assert s.mean == pytest.approx(x.mean())
    assert s.std == pytest.approx(x.std(ddof=1))
    for p in (50, 90, 95, 99):
        assert getattr(s, f"p{p}") == pytest.approx(np.percentile(x, p))
        ps = s.percentile(p)
        assert ps.lower_bound <= ps.value <= ps.upper_bound
        assert ps.ci_low <= ps.value <= ps.ci_high
    half = sps.t.ppf(0.975, 699) * x.std(ddof=1) / math.sqrt(700)
    assert s.mean_ci_low == pytest.approx(x.mean() - half)
    assert s.mean_ci_high == pytest.approx(x.mean() + half)
    assert s.cv == pytest.approx(x.std(ddof=1) / x.mean())
    med = np.median(x)
    assert s.robust_cv == pytest.approx(1.4826 * np.median(np.abs(x - med)) / med)
    assert not s.unstable
    assert s.throughput_per_s == pytest.approx(4 * 1000.0 / x.mean())
    assert s.samples_ms == pytest.approx(list(x))
    assert s.percentile(99).enough_samples and s.percentile(99).min_samples == 662


def test_robust_cv_flags_unstable_runs_against_threshold():
    rng = np.random.default_rng(2)
    bimodal = np.concatenate([rng.normal(1.0, 0.01, 500), rng.normal(2.0, 0.01, 500)])
    assert stats.summarize(bimodal, cv_threshold=0.10).unstable
    assert not stats.summarize(bimodal, cv_threshold=0.6).unstable
    quiet = rng.normal(1.0, 0.005, 1000)
    assert not stats.summarize(quiet, cv_threshold=stats.CV_THRESHOLD_GPU).unstable
    assert stats.default_cv_threshold(gpu=True) == stats.CV_THRESHOLD_GPU == 0.025
    assert stats.default_cv_threshold(gpu=False) == stats.CV_THRESHOLD_CPU == 0.10


def test_robust_cv_is_the_cv_of_a_normal_body_and_ignores_stalls():
    rng = np.random.default_rng(3)
    body = rng.normal(1.0, 0.05, 20000)
    assert stats.robust_cv(body) == pytest.approx(0.05, rel=0.05)
    assert stats.robust_cv([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(1.4826 * 1.0 / 3.0)
    stalled = body.copy()
    stalled[::50] *= 10.0                      # 2% of the samples 10x slower
    s = stats.summarize(stalled, cv_threshold=0.10)
    assert s.cv > 0.9 and s.robust_cv < 0.06 and not s.unstable
    assert stats.robust_cv(np.zeros(5)) == 0.0


@pytest.mark.parametrize("n, percentile, k", [(64, 90, 3), (1000, 90, 10), (199, 90, 9), (39, 90, 1),
                                             (662, 99, 3), (2000, 99, 10), (11, 50, 2), (100, 10, 5)])
def test_block_count_keeps_two_tail_samples_per_block(n, percentile, k):
    assert stats.block_count(n, percentile) == k


def test_sectioned_percentile_formula():
    # 4 blocks of 20 in time order: block j holds 20 copies of j + 1, except the last, which is 10s
    x = np.concatenate([np.full(20, 1.0), np.full(20, 2.0), np.full(20, 3.0), np.full(20, 10.0)])
    sec = stats.sectioned_percentile(x, 90, 0.99, max_blocks=4)
    q = float(np.percentile(x, 90))
    assert sec.blocks == 4 and sec.block_size == 20 and sec.block_estimates == [1.0, 2.0, 3.0, 10.0]
    s = math.sqrt(sum((v - q) ** 2 for v in (1.0, 2.0, 3.0, 10.0)) / 3)
    t = sps.t.ppf(0.99, 3)
    assert sec.value == q and sec.t_quantile == pytest.approx(t)
    assert sec.standard_error == pytest.approx(s / 2)
    assert sec.upper_bound == pytest.approx(q + t * s / 2) and sec.lower_bound == pytest.approx(q - t * s / 2)
    # the same values shuffled in time: the blocks agree, the interval is far narrower
    mixed = stats.sectioned_percentile(np.random.default_rng(0).permutation(x), 90, 0.99, max_blocks=4)
    assert mixed.upper_bound - mixed.lower_bound < (sec.upper_bound - sec.lower_bound) / 3
    assert stats.sectioned_percentile(np.arange(39.0), 90) is None  # not two blocks of 20


def test_sectioning_on_iid_samples_is_close_to_the_order_statistic_bounds():
    rng = np.random.default_rng(4)
    trials, n, p, c = 400, 1000, 90, 0.99
    q_true = -math.log(1 - p / 100)
    k_lo, k_up = stats.lower_bound_rank(n, p, c), stats.upper_bound_rank(n, p, c)
    widths, covered = [], 0
    for _ in range(trials):
        x = rng.exponential(size=n)
        sec = stats.sectioned_percentile(x, p, c)
        xs = np.sort(x)
        lo, hi = xs[k_lo - 1], xs[k_up - 1]
        widths.append((sec.upper_bound - sec.lower_bound) / (hi - lo))
        covered += min(lo, sec.lower_bound) <= q_true <= max(hi, sec.upper_bound)
    # the union the gate uses keeps (at least) the two one-sided 99% levels: >= 98% two-sided
    assert covered / trials >= 0.98 - 3 * math.sqrt(0.02 * 0.98 / trials)
    assert 0.7 < float(np.median(widths)) < 1.6


def test_extra_percentile_is_summarised():
    s = stats.summarize(np.arange(1000.0), percentiles=(97.5,))
    assert s.percentile(97.5).value == pytest.approx(np.percentile(np.arange(1000.0), 97.5))
    with pytest.raises(KeyError):
        s.percentile(80)


@pytest.mark.parametrize("bad", [[], [1.0, -1.0], [1.0, float("nan")]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(UserInputError):
        stats.summarize(bad)


@pytest.mark.parametrize("p", [0, 100, -5, 150])
def test_percentile_outside_open_interval_is_rejected(p):
    with pytest.raises(UserInputError):
        stats.min_samples_for_percentile(p)


def test_confidence_must_be_a_probability():
    with pytest.raises(UserInputError):
        stats.upper_bound_rank(100, 90, 1.0)


def test_wilson_interval_known_value():
    lo, hi = stats.wilson_interval(81, 100, 0.95)
    assert lo == pytest.approx(0.7222, abs=1e-3)
    assert hi == pytest.approx(0.8749, abs=1e-3)
