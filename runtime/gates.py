"""Gates: decisions with a statistical footing, and the exit code they add up to.

Latency gate (budget B ms on percentile p, confidence c, default 0.99; samples in time order):
    L_os, U_os  one-sided lower/upper confidence bounds of the p-th percentile from the order
                statistics (stats.py eq. 1): exact for i.i.d. samples, whatever the distribution.
    Stable run (robust_cv = 1.4826 MAD / median <= threshold, stats.py eq. 2):   [L, U] = [L_os, U_os]
    Unstable run (robust_cv > threshold): instability widens the interval, it does not veto.
        The samples are cut into k <= 10 contiguous time blocks, the percentile is estimated per
        block, and their spread around the pooled estimate q gives the sectioning bounds
        q -+ t_{c,k-1} S / sqrt(k) (stats.py eq. 3). The gate uses the union
            L = min(L_os, max(q - t S / sqrt(k), min_j q_j)),   U = max(U_os, q + t S / sqrt(k)).
        The floor min_j q_j: the run's latency distribution is the mixture of its blocks', and a
        mixture's p-quantile is never below the smallest of its components' p-quantiles. Without
        it one slow burst (a neighbour starting late in the run) makes S so large that L falls to
        0 and a budget missed 1000x could not FAIL.
        For i.i.d. data both intervals estimate the same sampling error, so [L, U] stays close to
        [L_os, U_os]; under drift or modes that change over time the block estimates disagree and
        [L, U] widens. A rare stall (beyond the percentile) moves neither q nor the q_j much.
    PASS          U <= B     (with confidence c the true percentile is within budget)
    FAIL          L >  B     (with confidence c it is not)
    INCONCLUSIVE  only when the evidence does not decide: L <= B < U (the, possibly widened,
                  interval straddles the budget), or fewer samples than MLPerf's minimum for p, or
                  an unstable run too short to cut into 2 blocks of ceil(2 / min(p, 1-p)) samples.
    Policy "widen" (default) applies the widening; "warn" (--allow-unstable) keeps the i.i.d.
    bounds [L_os, U_os] and only notes the instability. `--cv-threshold` sets the threshold on
    robust_cv (default 0.10 CPU, 0.025 GPU). ("inconclusive", the old name of the default policy,
    is read as "widen".)
Accuracy gate (labelled data): drop = reference top-1 - target top-1; PASS if drop <= max_drop.
Agreement gate (unlabelled data, reference model available): 1 - top-1 agreement bounds the
    accuracy drop (accuracy.py), so PASS if 1 - agreement <= max_drop, else FAIL.
Compare gate (--compare): PASS if every runtime pair is allclose(atol, rtol).

Exit code (edgecomp.exit_codes): BUDGET_EXCEEDED (1) if any gate FAILs, else INCONCLUSIVE (3) if any
is INCONCLUSIVE, else OK (0); SKIPPED gates are neutral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgecomp.exit_codes import ExitCode
from edgecomp.runtime.compare import CompareResult
from edgecomp.runtime.stats import LatencyStats, percentile_stat, sectioned_percentile

PASS, FAIL, INCONCLUSIVE, SKIPPED = "PASS", "FAIL", "INCONCLUSIVE", "SKIPPED"
UNSTABLE_POLICIES = ("widen", "warn")
_POLICY_ALIASES = {"inconclusive": "widen"}


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


def unstable_policy_name(policy: str) -> str:
    """The policy's canonical name ('inconclusive' is the old name of 'widen'); ValueError if unknown."""
    policy = _POLICY_ALIASES.get(policy, policy)
    if policy not in UNSTABLE_POLICIES:
        raise ValueError(f"unstable_policy must be one of {UNSTABLE_POLICIES}")
    return policy


def latency_gate(stats: LatencyStats, budget_ms: float, percentile: float, *,
                 unstable_policy: str = "widen") -> GateResult:
    """Compare the (widened, when unstable) confidence bounds of the percentile with the budget (module docstring)."""
    import numpy as np

    policy = unstable_policy_name(unstable_policy)
    name = f"latency p{percentile:g} <= {budget_ms:g} ms"
    try:
        ps = stats.percentile(percentile)
    except KeyError:
        conf = next(iter(stats.percentiles.values())).confidence if stats.percentiles else 0.99
        ps = percentile_stat(np.sort(np.asarray(stats.samples_ms)), percentile, confidence=conf,
                             interval_level=stats.interval_level)
    lower, upper = ps.lower_bound, ps.upper_bound
    section = None
    widen = stats.unstable and policy == "widen" and ps.enough_samples
    if widen:
        section = sectioned_percentile(stats.samples_ms, percentile, ps.confidence)
        if section is not None:
            lower = min(lower, max(section.lower_bound, min(section.block_estimates)))
            upper = max(upper, section.upper_bound)
    details = {
        "percentile": percentile,
        "estimate_ms": ps.value,
        "upper_bound_ms": upper,
        "lower_bound_ms": lower,
        "order_statistic_bounds_ms": [ps.lower_bound, ps.upper_bound],
        "confidence": ps.confidence,
        "samples": stats.n,
        "min_samples": ps.min_samples,
        "cv": stats.cv,
        "robust_cv": stats.robust_cv,
        "cv_threshold": stats.cv_threshold,
        "unstable": stats.unstable,
        "unstable_policy": policy,
        "widened": section is not None,
        "rule": f"PASS if the {ps.confidence:.0%} upper confidence bound of p{percentile:g} <= budget; FAIL if the "
                f"lower bound > budget; otherwise INCONCLUSIVE. Bounds: order statistics; when the run is unstable "
                f"(robust CV > {stats.cv_threshold:g}) widened to include the sectioning bounds over time blocks",
    }
    if section is not None:
        details.update(blocks=section.blocks, block_size=section.block_size,
                       block_estimates_ms=section.block_estimates, sectioning_bounds_ms=[
                           section.lower_bound, section.upper_bound])
    kind = "widened " if section is not None else ""
    bounds = (f"p{percentile:g} = {ps.value:.4g} ms, {ps.confidence:.0%} {kind}bounds "
              f"[{_fmt(lower)}, {_fmt(upper)}] ms over n={stats.n}")
    if section is not None:
        bounds += (f" (unstable: robust CV {stats.robust_cv:.3f} > {stats.cv_threshold:g}; p{percentile:g} over "
                   f"{section.blocks} time blocks spans {min(section.block_estimates):.4g}-"
                   f"{max(section.block_estimates):.4g} ms)")
    if not ps.enough_samples:
        status, why = INCONCLUSIVE, (f"only {stats.n} samples; bounding p{percentile:g} at {ps.confidence:.0%} "
                                     f"confidence needs >= {ps.min_samples}")
    elif widen and section is None:
        status, why = INCONCLUSIVE, (f"run unstable (robust CV {stats.robust_cv:.3f} > {stats.cv_threshold:g}) and "
                                     f"its {stats.n} samples are too few to cut into time blocks to widen the bounds; "
                                     "run longer (--iterations/--min-duration)")
    elif upper <= budget_ms:
        status, why = PASS, f"upper bound {_fmt(upper)} ms <= budget {budget_ms:g} ms"
    elif lower > budget_ms:
        status, why = FAIL, f"lower bound {_fmt(lower)} ms > budget {budget_ms:g} ms"
    else:
        status, why = INCONCLUSIVE, (f"the {kind}confidence interval straddles the budget {budget_ms:g} ms; "
                                     "run longer (--iterations/--min-duration)"
                                     + (" or on a quieter machine" if section is not None else "") + " to narrow it")
    if stats.unstable and policy == "warn":
        why += (f" (warning: unstable run, robust CV {stats.robust_cv:.3f} > {stats.cv_threshold:g}; bounds not "
                "widened, they assume i.i.d. samples)")
    return GateResult(name, status, upper, budget_ms, "ms", f"{bounds}: {why}", details)


def accuracy_gate(target_top1: float, reference_top1: float, max_drop: float, *, samples: int,
                  reference_source: str, paired: bool, metric: str = "top-1") -> GateResult:
    """PASS when reference - target <= max_drop, in `metric` (top-1, or a user metric: higher is better)."""
    drop = reference_top1 - target_top1
    status = PASS if drop <= max_drop else FAIL
    relation = "<=" if status == PASS else ">"
    msg = (f"{metric} {target_top1:.4f} vs reference {reference_top1:.4f} ({reference_source}): drop {drop:+.4f} "
           f"{relation} {max_drop:g} over {samples} samples")
    if not paired:
        msg += " (reference measured on a different sample set: unpaired)"
    return GateResult("accuracy drop", status, drop, max_drop, metric, msg,
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
    """The gates' combined exit code (a plain int, as stored in reports): a FAIL outranks an INCONCLUSIVE."""
    statuses = {g.status for g in gates}
    if FAIL in statuses:
        return int(ExitCode.BUDGET_EXCEEDED)
    if INCONCLUSIVE in statuses:
        return int(ExitCode.INCONCLUSIVE)
    return int(ExitCode.OK)


_VERDICTS = {ExitCode.OK: PASS, ExitCode.BUDGET_EXCEEDED: FAIL, ExitCode.INCONCLUSIVE: INCONCLUSIVE}


def verdict(code: int) -> str:
    """PASS / FAIL / INCONCLUSIVE for a gate exit code; ERROR for anything else (could not run)."""
    return _VERDICTS.get(code, "ERROR")
