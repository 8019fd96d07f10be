"""Gates: decisions with a statistical footing, and the exit code they add up to.

Latency gate (budget B ms on percentile p, confidence c, default 0.99):
    U = one-sided upper confidence bound of the p-th percentile (order statistic, stats.py eq. 1)
    L = one-sided lower confidence bound
    PASS          U <= B     (with confidence c the true percentile is within budget)
    FAIL          L >  B     (with confidence c it is not)
    INCONCLUSIVE  L <= B < U (the interval straddles the budget), or fewer samples than MLPerf's
                  minimum for p, or the run is unstable (CV above threshold) under the default
                  policy "inconclusive" (policy "warn" only reports the instability).
Accuracy gate (labelled data): drop = reference top-1 - target top-1; PASS if drop <= max_drop.
Agreement gate (unlabelled data, reference model available): 1 - top-1 agreement bounds the
    accuracy drop (accuracy.py), so PASS if 1 - agreement <= max_drop, else FAIL.
Compare gate (--compare): PASS if every runtime pair is allclose(atol, rtol).

Exit code: 1 if any gate FAILs, else 3 if any is INCONCLUSIVE, else 0 (SKIPPED gates are neutral).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from runtime.compare import CompareResult
from runtime.stats import LatencyStats, percentile_stat

PASS, FAIL, INCONCLUSIVE, SKIPPED = "PASS", "FAIL", "INCONCLUSIVE", "SKIPPED"
EXIT_OK, EXIT_BREACH, EXIT_INCONCLUSIVE = 0, 1, 3
UNSTABLE_POLICIES = ("inconclusive", "warn")


@dataclass
class GateResult:
    name: str
    status: str
    measured: float | None
    threshold: float | None
    unit: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.4g}"


def latency_gate(stats: LatencyStats, budget_ms: float, percentile: float, *,
                 unstable_policy: str = "inconclusive") -> GateResult:
    """Compare the upper confidence bound of the percentile with the budget (see module docstring)."""
    import numpy as np

    if unstable_policy not in UNSTABLE_POLICIES:
        raise ValueError(f"unstable_policy must be one of {UNSTABLE_POLICIES}")
    name = f"latency p{percentile:g} <= {budget_ms:g} ms"
    try:
        ps = stats.percentile(percentile)
    except KeyError:
        conf = next(iter(stats.percentiles.values())).confidence if stats.percentiles else 0.99
        ps = percentile_stat(np.sort(np.asarray(stats.samples_ms)), percentile, confidence=conf,
                             interval_level=stats.interval_level)
    details = {
        "percentile": percentile,
        "estimate_ms": ps.value,
        "upper_bound_ms": ps.upper_bound,
        "lower_bound_ms": ps.lower_bound,
        "confidence": ps.confidence,
        "samples": stats.n,
        "min_samples": ps.min_samples,
        "cv": stats.cv,
        "cv_threshold": stats.cv_threshold,
        "unstable": stats.unstable,
        "rule": f"PASS if the {ps.confidence:.0%} upper confidence bound of p{percentile:g} <= budget; FAIL if the "
                f"lower bound > budget; otherwise INCONCLUSIVE",
    }
    bounds = (f"p{percentile:g} = {ps.value:.4g} ms, {ps.confidence:.0%} bounds "
              f"[{_fmt(ps.lower_bound)}, {_fmt(ps.upper_bound)}] ms over n={stats.n}")
    if not ps.enough_samples:
        status, why = INCONCLUSIVE, (f"only {stats.n} samples; bounding p{percentile:g} at {ps.confidence:.0%} "
                                     f"confidence needs >= {ps.min_samples}")
    elif stats.unstable and unstable_policy == "inconclusive":
        status, why = INCONCLUSIVE, (f"run unstable: CV {stats.cv:.3f} > {stats.cv_threshold:g} "
                                     "(quiet the machine, lock clocks, or raise --cv-threshold)")
    elif ps.upper_bound <= budget_ms:
        status, why = PASS, f"upper bound {_fmt(ps.upper_bound)} ms <= budget {budget_ms:g} ms"
    elif ps.lower_bound > budget_ms:
        status, why = FAIL, f"lower bound {_fmt(ps.lower_bound)} ms > budget {budget_ms:g} ms"
    else:
        status, why = INCONCLUSIVE, (f"the confidence interval straddles the budget {budget_ms:g} ms; "
                                     "run longer (--iterations/--min-duration) to narrow it")
    if stats.unstable and unstable_policy == "warn" and status != INCONCLUSIVE:
        why += f" (warning: unstable run, CV {stats.cv:.3f} > {stats.cv_threshold:g})"
    return GateResult(name, status, ps.upper_bound, budget_ms, "ms", f"{bounds}: {why}", details)


def accuracy_gate(target_top1: float, reference_top1: float, max_drop: float, *, samples: int,
                  reference_source: str, paired: bool) -> GateResult:
    drop = reference_top1 - target_top1
    status = PASS if drop <= max_drop else FAIL
    relation = "<=" if status == PASS else ">"
    msg = (f"top-1 {target_top1:.4f} vs reference {reference_top1:.4f} ({reference_source}): drop {drop:+.4f} "
           f"{relation} {max_drop:g} over {samples} samples")
    if not paired:
        msg += " (reference measured on a different sample set: unpaired)"
    return GateResult("accuracy drop", status, drop, max_drop, "top-1", msg,
                      {"target_top1": target_top1, "reference_top1": reference_top1, "samples": samples,
                       "reference_source": reference_source, "paired": paired})


def agreement_gate(agreement: dict[str, Any], max_drop: float, reference: str) -> GateResult:
    disagreement = 1.0 - agreement["top1_agreement"]
    status = PASS if disagreement <= max_drop else FAIL
    msg = (f"top-1 agreement with {reference} {agreement['top1_agreement']:.4f} over {agreement['samples']} unlabelled "
           f"samples: possible accuracy drop <= {disagreement:.4f} ({'<=' if status == PASS else '>'} {max_drop:g}); "
           f"max |output error| {agreement['max_abs_error']:.3g}")
    return GateResult("accuracy drop (agreement bound)", status, disagreement, max_drop, "1-agreement", msg,
                      dict(agreement, reference=reference))


def compare_gate(result: CompareResult) -> GateResult:
    worst = result.worst()
    status = PASS if result.passed else FAIL
    if worst is None:
        return GateResult("output agreement", SKIPPED, None, None, "", "nothing to compare")
    msg = (f"{len(result.pairs)} runtime pair(s), atol {result.atol:g} rtol {result.rtol:g}; worst "
           f"{worst.candidate} vs {worst.reference}: max abs {worst.max_abs:.3g}, max rel {worst.max_rel:.3g}")
    return GateResult("output agreement", status, worst.max_abs, result.atol, "abs", msg,
                      {"atol": result.atol, "rtol": result.rtol})


def skipped(name: str, why: str) -> GateResult:
    return GateResult(name, SKIPPED, None, None, "", why)


def exit_code(gates: list[GateResult]) -> int:
    statuses = {g.status for g in gates}
    if FAIL in statuses:
        return EXIT_BREACH
    if INCONCLUSIVE in statuses:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def verdict(code: int) -> str:
    return {EXIT_OK: PASS, EXIT_BREACH: FAIL, EXIT_INCONCLUSIVE: INCONCLUSIVE}.get(code, "ERROR")
