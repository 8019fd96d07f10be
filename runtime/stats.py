"""Latency statistics that are sound enough to gate CI on.

Given n per-inference latencies x_1..x_n (assumed i.i.d. draws from the run's distribution) and
their order statistics x_(1) <= ... <= x_(n):

Point estimates
    mean, std (ddof=1), min, max, percentiles by linear interpolation between order statistics
    (numpy's default, Hyndman & Fan type 7), throughput = batch * 1000 / mean_ms, and the
    coefficient of variation CV = std / mean.

Mean: Student-t interval (two-sided, level c)
    mean +- t_{(1+c)/2, n-1} * std / sqrt(n)

Percentile q_p: distribution-free order-statistic bounds (no assumption on the distribution's
shape). The number of samples below the true quantile q_p is Binomial(n, p), so

    P(x_(k) >= q_p) = P(Binom(n, p) <= k - 1)                                    (1)

    one-sided upper bound at confidence c: x_(k) with the smallest k such that
        BinomCDF(k - 1; n, p) >= c
    one-sided lower bound at confidence c: x_(k) with the largest k such that
        BinomCDF(k - 1; n, p) <= 1 - c
    a two-sided interval at level c takes each side at (1 + c) / 2.

When no k <= n satisfies the upper-bound condition (too few samples) the bound is +inf: the data
cannot bound that percentile at that confidence.

Minimum samples for a percentile (MLPerf LoadGen early stopping, loadgen/early_stopping.cc):
LoadGen requires a run to tolerate t = 1 "over-latency" sample. With h under-latency samples the
probability of seeing at most t over-latency samples among h + t if the true p-quantile were
worse than the bound is

    odds(h, t) = BinomCDF(t; h + t, 1 - p) = I_p(h, t + 1)     (regularised incomplete beta)

and h_min(t) is the smallest h with odds(h, t) < 1 - c. A run needs at least h_min(1) + 1 samples:
64 for p90 and 662 for p99 at c = 0.99 (the numbers MLPerf reports as "Processed at least 64
queries" / "662 queries"). `min_samples_for_percentile` computes this; `mlperf_early_stopping_estimate`
reproduces LoadGen's SingleStream estimate (the (n - t + 1)-th order statistic, t the largest
count with n >= h_min(t) + t).

Stability: robust dispersion, not the CV. The CV (std / mean) is driven by outliers: a handful of
10x scheduler stalls among a thousand samples lifts it above 0.4 while the body of the distribution
does not move. The run's dispersion is therefore measured by the normal-consistent robust CV

    robust_cv = 1.4826 * MAD / median,     MAD = median_i |x_i - median(x)|           (2)

(1.4826 = 1 / Phi^-1(3/4) makes 1.4826 * MAD estimate sigma for normal data, so robust_cv equals
the CV on a Gaussian body; its breakdown point is 50%: stalls in fewer than half of the samples
cannot blow it up). A run is *unstable* when robust_cv > threshold; that widens the gate's interval
(eq. 3 below) and decides nothing by itself. Defaults: 0.10 on CPUs, 0.025 for GPU runtimes timed
from the host. On a normal body robust_cv = CV, so these keep the meaning the CV thresholds had for
the body. The choice is cheap either way: a false "unstable" widens an i.i.d. run's interval very
little (about the order-statistic one, below), and a run that misses the flag keeps bounds that
are exact if it is i.i.d. On the shared 2-core host of BENCHMARKS.md, runs whose stalls were spread
evenly stayed at 0.02-0.09 and runs whose stalls came and went reached 0.3-0.5 (CV 1.5-2 in both).
For GPUs, trtexec warns when the *device-side* GPU compute time's CV exceeds 1% (TensorRT
samples/common/sampleReporting.cpp kUNSTABLE_PERF_REPORTING_THRESHOLD); host-side timing adds
transfer and launch jitter, hence the looser 0.025. Both are configurable; the `cv` field is still reported.

Sectioning: widening the percentile's bounds when the run is unstable (used by gates.py). The
order-statistic bounds (1) assume i.i.d. samples; drift (thermal throttling, a neighbour's job
starting) or slow switching between modes breaks that and makes them too narrow. The samples are
kept in time order, so split them into k contiguous blocks B_1..B_k (sizes differ by at most one)
and estimate the percentile in each: q_j = percentile(B_j, p). With q the estimate from all n
samples, the sectioning estimate of its standard error (Asmussen & Glynn, Stochastic Simulation,
2007, III.5a; Nakayama, "Confidence intervals for quantiles using sectioning", ACM TOMACS 2014) is

    S^2 = 1/(k - 1) * sum_j (q_j - q)^2,      SE = S / sqrt(k)
    one-sided bounds at confidence c:  q -+ t_{c, k-1} * SE                              (3)

For i.i.d. samples a block estimate from n/k samples has about k times the variance of q, so SE
estimates q's own standard error and (3) is close to the order-statistic bounds (0.9-1.15x their
width for p90 at n = 1000, k = 10; tests/test_runtime_stats.py). (3) is a large-sample t interval:
on small, skewed blocks its upper side can cover less than c, which is why the gate takes its
union with the exact bounds (1) rather than replacing them. When the blocks disagree (drift, modes
that change over time) S grows and so does the interval. Centring on q, not on the mean of the q_j,
keeps the small-block bias of the q_j out of the centre (it can only inflate S). Blocks: k =
min(10, floor(n / m_min)) with m_min = ceil(2 / min(p, 1 - p)), so every block expects at least two
samples beyond the percentile; a run too short for two blocks cannot be widened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats as sps

from edgecomp.errors import UserInputError

DEFAULT_CONFIDENCE = 0.99          # MLPerf early stopping's confidence
DEFAULT_INTERVAL_LEVEL = 0.95      # two-sided intervals shown in reports
CV_THRESHOLD_CPU = 0.10            # thresholds on robust_cv (eq. 2); the names predate it
CV_THRESHOLD_GPU = 0.025
MAD_TO_SIGMA = 1.4826              # 1 / Phi^-1(3/4)
MAX_BLOCKS = 10                    # sectioning (eq. 3)
TAIL_SAMPLES_PER_BLOCK = 2
TRTEXEC_GPU_COMPUTE_CV = 0.01      # for reference only (device-side timing)
REPORTED_PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def _fraction(percentile: float) -> float:
    """90 -> 0.9; percentiles are given in percent everywhere in edgecomp."""
    if not 0.0 < percentile < 100.0:
        raise UserInputError(f"percentile must be in (0, 100), got {percentile}")
    return percentile / 100.0


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise UserInputError(f"confidence must be in (0, 1), got {confidence}")


# ---- order statistics -----------------------------------------------------------------------

def upper_bound_rank(n: int, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """1-based k of the order statistic that is a one-sided upper confidence bound (eq. 1); None if k > n."""
    _check_confidence(confidence)
    p = _fraction(percentile)
    if n <= 0:
        return None
    # binom.ppf(c) = smallest m with CDF(m) >= c; k - 1 = m. Guard against float round-off at the edge.
    m = int(sps.binom.ppf(confidence, n, p))
    while m > 0 and sps.binom.cdf(m - 1, n, p) >= confidence:
        m -= 1
    while sps.binom.cdf(m, n, p) < confidence:
        m += 1
    k = m + 1
    return k if k <= n else None


def lower_bound_rank(n: int, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """1-based k of the order statistic that is a one-sided lower confidence bound (eq. 1); None if k < 1."""
    _check_confidence(confidence)
    p = _fraction(percentile)
    if n <= 0:
        return None
    # largest k with CDF(k - 1) <= 1 - c
    k = int(sps.binom.ppf(1.0 - confidence, n, p)) + 1
    while k >= 1 and sps.binom.cdf(k - 1, n, p) > 1.0 - confidence:
        k -= 1
    while k + 1 <= n and sps.binom.cdf(k, n, p) <= 1.0 - confidence:
        k += 1
    return k if k >= 1 else None


def percentile_upper_bound(samples, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Distribution-free one-sided upper confidence bound on the `percentile`; +inf if n is too small."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    k = upper_bound_rank(x.size, percentile, confidence)
    return math.inf if k is None else float(x[k - 1])


def percentile_lower_bound(samples, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Distribution-free one-sided lower confidence bound on the `percentile`; -inf if n is too small."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    k = lower_bound_rank(x.size, percentile, confidence)
    return -math.inf if k is None else float(x[k - 1])


# ---- MLPerf LoadGen early stopping ----------------------------------------------------------

def _odds(h: int, t: int, p: float) -> float:
    """P(at most t over-latency samples among h + t | over-latency rate 1 - p) = I_p(h, t + 1)."""
    return float(sps.binom.cdf(t, h + t, 1.0 - p))


@lru_cache(maxsize=4096)
def _h_min(t: int, p: float, confidence: float) -> int:
    """Smallest h with odds(h, t) < 1 - c (exponential bracketing, then bisection; odds falls with h)."""
    target = 1.0 - confidence
    lo, hi = 1, 2
    while _odds(hi, t, p) >= target:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if _odds(mid, t, p) < target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def min_samples_for_percentile(percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Fewest samples for which MLPerf early stopping can bound the percentile: h_min(1) + 1.

    64 for p90 and 662 for p99 at confidence 0.99.
    """
    _check_confidence(confidence)
    return _h_min(1, _fraction(percentile), confidence) + 1


def mlperf_early_stopping_estimate(samples, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """LoadGen's SingleStream early-stopping percentile estimate; +inf below the minimum sample count."""
    _check_confidence(confidence)
    p = _fraction(percentile)
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if n < min_samples_for_percentile(percentile, confidence):
        return math.inf
    # Largest t with n >= h_min(t) + t (h_min(t) + t increases with t): bisection on t.
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _h_min(mid, p, confidence) + mid <= n:
            lo = mid
        else:
            hi = mid - 1
    return float(x[n - lo])


# ---- stability and sectioning ---------------------------------------------------------------

def robust_cv(samples) -> float:
    """1.4826 * MAD / median (eq. 2): the CV of a normal body, blind to a minority of outliers; 0 if median is 0."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    med = float(np.median(x))
    if med <= 0:
        return 0.0
    return MAD_TO_SIGMA * float(np.median(np.abs(x - med))) / med


def block_count(n: int, percentile: float, max_blocks: int = MAX_BLOCKS) -> int:
    """k = min(max_blocks, floor(n / m_min)), m_min = ceil(2 / min(p, 1 - p)) samples per block (eq. 3)."""
    p = _fraction(percentile)
    m_min = math.ceil(TAIL_SAMPLES_PER_BLOCK / min(p, 1.0 - p) - 1e-9)
    return max(0, min(int(max_blocks), n // m_min))


@dataclass(frozen=True)
class SectionedPercentile:
    """A percentile's sectioning interval (eq. 3) over k contiguous time blocks."""

    percentile: float
    value: float                   # q from all samples
    blocks: int                    # k
    block_size: int                # smallest block's size
    block_estimates: list[float]   # q_1..q_k in time order
    standard_error: float          # S / sqrt(k)
    t_quantile: float              # t_{c, k-1}
    lower_bound: float             # q - t * SE, at confidence c (one-sided)
    upper_bound: float             # q + t * SE
    confidence: float


def sectioned_percentile(samples_in_time_order, percentile: float, confidence: float = DEFAULT_CONFIDENCE, *,
                         max_blocks: int = MAX_BLOCKS) -> SectionedPercentile | None:
    """Sectioning bounds (eq. 3) of the percentile from contiguous blocks; None if fewer than 2 blocks fit."""
    _check_confidence(confidence)
    x = np.asarray(samples_in_time_order, dtype=np.float64).ravel()
    k = block_count(x.size, percentile, max_blocks)
    if k < 2:
        return None
    q = float(np.percentile(x, percentile))
    parts = np.array_split(x, k)
    estimates = np.array([np.percentile(b, percentile) for b in parts])
    s = math.sqrt(float(np.sum((estimates - q) ** 2)) / (k - 1))
    se = s / math.sqrt(k)
    t = float(sps.t.ppf(confidence, k - 1))
    return SectionedPercentile(
        percentile=float(percentile), value=q, blocks=k, block_size=min(b.size for b in parts),
        block_estimates=[float(v) for v in estimates], standard_error=se, t_quantile=t,
        lower_bound=q - t * se, upper_bound=q + t * se, confidence=confidence,
    )


# ---- summaries ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PercentileStat:
    """A percentile's point estimate with its order-statistic bounds."""

    percentile: float
    value: float
    ci_low: float          # two-sided interval at `interval_level`
    ci_high: float
    interval_level: float
    upper_bound: float     # one-sided upper bound at `confidence` (what latency gates compare)
    lower_bound: float     # one-sided lower bound at `confidence`
    confidence: float
    min_samples: int       # MLPerf minimum for this percentile at `confidence`
    enough_samples: bool


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-inference latencies in milliseconds (raw samples kept, in time order, for recomputation)."""

    n: int
    batch_size: int
    min: float
    mean: float
    std: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    cv: float                      # std / mean (reported; outlier-driven, decides nothing)
    robust_cv: float               # 1.4826 * MAD / median (eq. 2)
    cv_threshold: float            # threshold on robust_cv (the name predates it)
    unstable: bool                 # robust_cv > cv_threshold
    mean_ci_low: float
    mean_ci_high: float
    interval_level: float
    throughput_per_s: float        # samples per second: batch_size * 1000 / mean
    percentiles: dict[str, PercentileStat] = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def percentile(self, percentile: float) -> PercentileStat:
        key = _pkey(percentile)
        if key not in self.percentiles:
            raise KeyError(f"percentile {percentile} was not summarised")
        return self.percentiles[key]


def _pkey(percentile: float) -> str:
    return f"{float(percentile):g}"


def percentile_stat(
    x_sorted: np.ndarray,
    percentile: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
) -> PercentileStat:
    """Point estimate, two-sided interval and one-sided bounds of one percentile of sorted samples."""
    side = (1.0 + interval_level) / 2.0
    needed = min_samples_for_percentile(percentile, confidence)
    return PercentileStat(
        percentile=float(percentile),
        value=float(np.percentile(x_sorted, percentile)),
        ci_low=percentile_lower_bound(x_sorted, percentile, side),
        ci_high=percentile_upper_bound(x_sorted, percentile, side),
        interval_level=interval_level,
        upper_bound=percentile_upper_bound(x_sorted, percentile, confidence),
        lower_bound=percentile_lower_bound(x_sorted, percentile, confidence),
        confidence=confidence,
        min_samples=needed,
        enough_samples=x_sorted.size >= needed,
    )


def mean_interval(x: np.ndarray, level: float = DEFAULT_INTERVAL_LEVEL) -> tuple[float, float]:
    """Student-t interval for the mean; (mean, mean) for a single sample is not an interval: +-inf."""
    n = x.size
    mean = float(np.mean(x))
    if n < 2:
        return -math.inf, math.inf
    half = float(sps.t.ppf((1.0 + level) / 2.0, n - 1)) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def summarize(
    samples_ms,
    *,
    batch_size: int = 1,
    percentiles: tuple[float, ...] = REPORTED_PERCENTILES,
    confidence: float = DEFAULT_CONFIDENCE,
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
    cv_threshold: float = CV_THRESHOLD_CPU,
) -> LatencyStats:
    """All statistics of one run's per-inference latencies (ms), given in the order they were timed."""
    x = np.asarray(samples_ms, dtype=np.float64).ravel()
    if x.size == 0:
        raise UserInputError("no latency samples to summarise")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise UserInputError("latency samples must be finite and non-negative")
    if cv_threshold <= 0:
        raise UserInputError(f"cv_threshold must be positive, got {cv_threshold}")
    _check_confidence(confidence)
    _check_confidence(interval_level)
    xs = np.sort(x)
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    rcv = robust_cv(x)
    lo, hi = mean_interval(x, interval_level)
    wanted = sorted(set(float(p) for p in (*REPORTED_PERCENTILES, *percentiles)))
    pstats = {
        _pkey(p): percentile_stat(xs, p, confidence=confidence, interval_level=interval_level) for p in wanted
    }
    return LatencyStats(
        n=int(x.size),
        batch_size=int(batch_size),
        min=float(xs[0]),
        mean=mean,
        std=std,
        max=float(xs[-1]),
        p50=pstats["50"].value,
        p90=pstats["90"].value,
        p95=pstats["95"].value,
        p99=pstats["99"].value,
        cv=cv,
        robust_cv=rcv,
        cv_threshold=float(cv_threshold),
        unstable=bool(rcv > cv_threshold),
        mean_ci_low=lo,
        mean_ci_high=hi,
        interval_level=interval_level,
        throughput_per_s=batch_size * 1000.0 / mean if mean > 0 else math.inf,
        percentiles=pstats,
        samples_ms=[float(v) for v in x],
    )


def default_cv_threshold(gpu: bool) -> float:
    """CV_THRESHOLD_GPU for GPU runtimes, CV_THRESHOLD_CPU otherwise."""
    return CV_THRESHOLD_GPU if gpu else CV_THRESHOLD_CPU


def wilson_interval(successes: int, n: int, level: float = DEFAULT_INTERVAL_LEVEL) -> tuple[float, float]:
    """Wilson score interval for a proportion (accuracy over n samples)."""
    if n <= 0:
        return 0.0, 1.0
    z = float(sps.norm.ppf((1.0 + level) / 2.0))
    phat = successes / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
