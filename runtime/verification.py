"""verify(): one measurement (runtime.harness: prepare_measurement, then measure_prepared on the target)
followed by the gates (runtime.gates). runtime.fleet runs the same plan on several targets.

Accuracy reference, first that applies -- labelled data: an explicit reference accuracy; explicit
reference outputs (same pool); the reference model run on the host on the same samples (paired);
an OUTDIR's report.json original_accuracy (unpaired). Unlabelled data: the top-1 agreement with
explicit reference outputs or with the reference model, which bounds the accuracy drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecomp.errors import UserInputError
from edgecomp.formats import read_optional
from edgecomp.outdir import REPORT_FILE
from edgecomp.runtime import gates as G
from edgecomp.runtime.accuracy import accuracy_report, agreement_report
from edgecomp.runtime.harness import (MeasureSettings, Measurement, PreparedRun, TargetOptions, check_gate_options,
                                      measure_prepared, prepare_measurement)
from edgecomp.runtime.reference import ReferenceSpec, report_accuracy
from edgecomp.runtime.report import VerifyResult


@dataclass(frozen=True)
class GatePlan:
    """The gates a verification applies, resolved from the arguments and the profile before any work."""

    device: str
    budget_ms: float | None
    percentile: float
    max_accuracy_drop: float | None
    data_spec: str | None
    reference_accuracy: float | None
    reference_outputs: np.ndarray | None
    compare: bool
    unstable_policy: str
    metric: Any = None


def prepare_verify(
    artifact_path: str | Path,
    profile,
    *,
    data_spec: str | None = None,
    batch_size: int = 1,
    latency_budget_ms: float | None = None,
    percentile: float | None = None,
    max_accuracy_drop: float | None = 0.01,
    reference: ReferenceSpec | str | None = None,
    reference_accuracy: float | None = None,
    reference_outputs: np.ndarray | None = None,
    settings: MeasureSettings | None = None,
    providers: Sequence[str] | None = None,
    compare: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    trust_code: bool = False,
    metric=None,
) -> tuple[GatePlan, PreparedRun]:
    """verify()'s checks and host-side preparation, shared by every target it then runs on (runtime.fleet)."""
    settings = settings or MeasureSettings()
    budget = profile.latency_budget_ms if latency_budget_ms is None else latency_budget_ms
    pct = profile.latency_percentile if percentile is None else percentile
    check_gate_options(budget, pct, max_accuracy_drop)
    if reference_accuracy is not None and not 0 <= reference_accuracy <= 1:
        raise UserInputError(f"reference accuracy must be a fraction in [0, 1], got {reference_accuracy}")

    gated_accuracy = max_accuracy_drop is not None and data_spec is not None
    need_reference = gated_accuracy and reference_accuracy is None and reference_outputs is None
    prepared = prepare_measurement(artifact_path, profile, data_spec=data_spec, batch_size=batch_size,
                                   percentile=pct if budget is not None else None, settings=settings,
                                   providers=providers, reference=reference, need_reference=need_reference,
                                   compare=compare, atol=atol, rtol=rtol, trust_code=trust_code, metric=metric)
    plan = GatePlan(profile.name, budget, pct, max_accuracy_drop, data_spec, reference_accuracy, reference_outputs,
                    compare, settings.unstable_policy, metric)
    return plan, prepared


def verify(
    artifact_path: str | Path,
    profile,
    *,
    target: str | None = None,
    data_spec: str | None = None,
    batch_size: int = 1,
    latency_budget_ms: float | None = None,
    percentile: float | None = None,
    max_accuracy_drop: float | None = 0.01,
    reference: ReferenceSpec | str | None = None,
    reference_accuracy: float | None = None,
    reference_outputs: np.ndarray | None = None,
    settings: MeasureSettings | None = None,
    providers: Sequence[str] | None = None,
    compare: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    target_options: TargetOptions | None = None,
    trust_code: bool = False,
    metric=None,
) -> VerifyResult:
    """Measure and gate. Budget/percentile default to the profile's; max_accuracy_drop None skips accuracy.

    Exit codes: 0 all gates pass, 1 a budget is exceeded, 3 inconclusive; could-not-run raises an
    EdgecompError (exit 2). `reference_outputs` (outputs of the reference model on the same pool: same
    data spec, samples and seed) replace running the reference model for the agreement gate.
    `metric(outputs, labels) -> float` (Python API; higher is better) replaces top-1 in the accuracy
    gate, whose drop is then in the metric's units.
    """
    plan, prepared = prepare_verify(
        artifact_path, profile, data_spec=data_spec, batch_size=batch_size, latency_budget_ms=latency_budget_ms,
        percentile=percentile, max_accuracy_drop=max_accuracy_drop, reference=reference,
        reference_accuracy=reference_accuracy, reference_outputs=reference_outputs, settings=settings,
        providers=providers, compare=compare, atol=atol, rtol=rtol, trust_code=trust_code, metric=metric)
    return gate(plan, measure_prepared(prepared, target=target, target_options=target_options))


def gate(plan: GatePlan, m: Measurement) -> VerifyResult:
    """Apply the plan's gates to one measurement; their exit code is G.exit_code's."""
    results: list[G.GateResult] = []
    if plan.budget_ms is None:
        results.append(G.skipped("latency", f"no latency budget (profile {plan.device!r} has none; pass "
                                            "--latency-budget-ms)"))
    else:
        results.append(G.latency_gate(m.report.latency, plan.budget_ms, plan.percentile,
                                      unstable_policy=plan.unstable_policy))
    if plan.max_accuracy_drop is None:
        results.append(G.skipped("accuracy drop", "not requested"))
    elif plan.data_spec is None:
        results.append(G.skipped("accuracy drop", "random inputs; pass --data to gate accuracy"))
    else:
        results.append(_accuracy_gate(m, plan.max_accuracy_drop, plan.reference_accuracy, plan.reference_outputs,
                                      plan.metric))
    if plan.compare:
        results.append(G.compare_gate(m.report.compare) if m.report.compare is not None
                       else G.skipped("output agreement", "fewer than two runtimes could run the model"))
    return VerifyResult(G.exit_code(results), results, m.report)


def _accuracy_gate(m: Measurement, max_drop: float, reference_accuracy, reference_outputs, metric=None) -> G.GateResult:
    """Labelled data: given accuracy > given outputs > reference model on the same samples > report.json
    (top-1 only: a user metric has no recorded reference). Unlabelled data: agreement with given
    outputs > with the reference model. With `metric`, the drop is in the metric's units."""
    report = m.report
    key, name = ("metric", "metric") if metric is not None else ("top1", "top-1")
    if m.pool.has_labels and report.accuracy is not None:
        target_top1 = report.accuracy[key]
        n = report.accuracy["samples"]
        if reference_accuracy is not None:
            return G.accuracy_gate(target_top1, reference_accuracy, max_drop, samples=n,
                                   reference_source="given", paired=False, metric=name)
        if reference_outputs is not None:
            ref_top1 = accuracy_report(_check_ref(reference_outputs, m), m.pool.y, metric=metric)[key]
            return G.accuracy_gate(target_top1, ref_top1, max_drop, samples=n, reference_source="given outputs",
                                   paired=True, metric=name)
        if report.reference and report.reference.get("accuracy"):
            return G.accuracy_gate(target_top1, report.reference["accuracy"][key], max_drop, samples=n,
                                   reference_source=f"{report.reference['model']} on the same samples", paired=True,
                                   metric=name)
        if metric is not None:
            raise UserInputError("cannot gate a user metric without a reference: pass reference= (a model spec) or "
                                 "reference_accuracy= (the metric's value for the original model)")
        if m.artifact.outdir is not None:  # a newer edgecomp's report.json: say so, rather than misread it
            read_optional(Path(m.artifact.outdir) / REPORT_FILE, "compress-report")
        from_report = report_accuracy(m.artifact.outdir)
        if from_report is not None:
            report.notes.append("reference accuracy is report.json original_accuracy (unpaired with these samples)")
            return G.accuracy_gate(target_top1, from_report, max_drop, samples=n,
                                   reference_source="report.json original_accuracy", paired=False)
        raise UserInputError("cannot gate accuracy: no reference accuracy (pass --reference MODEL_SPEC, or verify an "
                             "output directory whose report.json has original_accuracy)")
    if metric is not None:
        raise UserInputError("a user metric needs labelled data (its targets): this data has no labels, so only the "
                             "top-1 agreement bound with a reference model applies; drop metric= to use it")
    # unlabelled: agreement bound
    if reference_outputs is not None:
        agreement = agreement_report(m.outputs, _check_ref(reference_outputs, m))
        report.agreement = agreement
        return G.agreement_gate(agreement, max_drop, "the given reference outputs")
    if report.agreement is not None:
        return G.agreement_gate(report.agreement, max_drop, report.reference["model"])
    raise UserInputError("cannot gate accuracy on unlabelled data without a reference model: pass --reference "
                         "MODEL_SPEC (or use an artifact whose metadata names its source model)")


def _check_ref(reference_outputs: np.ndarray, m: Measurement) -> np.ndarray:
    ref = np.asarray(reference_outputs)
    if m.outputs is None or ref.shape[0] != m.outputs.shape[0]:
        raise UserInputError(f"reference outputs have {ref.shape[0]} rows but the input pool has "
                             f"{m.pool.count} samples (use the same data spec, samples and seed)")
    return ref
