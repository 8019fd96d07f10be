"""edgecomp.verify() and edgecomp.profile(): measure an artifact on the target, as the CLI does."""

from __future__ import annotations

import os
from typing import Any

from edgecomp.api.devices import as_profile
from edgecomp.api.keywords import keywords_checked
from edgecomp.runtime.harness import MeasureSettings, TargetOptions
from edgecomp.runtime.report import ProfileReport, VerifyResult


def _settings(settings: MeasureSettings | dict | None) -> MeasureSettings | None:
    if isinstance(settings, dict):
        return keywords_checked(MeasureSettings, "settings", **settings)
    return settings


def verify(
    artifact: str | os.PathLike,
    *,
    device: Any,
    target: str | None = None,
    data: str | None = None,
    latency_budget_ms: float | None = None,
    percentile: float | None = None,
    max_accuracy_drop: float | None = 0.01,
    settings: MeasureSettings | dict | None = None,
    target_options: TargetOptions | None = None,
    **options: Any,
) -> VerifyResult:
    """Measure `artifact` (.onnx/.ort, TensorRT .engine/.plan, or a compress output directory) on the
    target and gate it, as `edgecomp verify`. Returns a VerifyResult: `.exit_code` is the CLI's
    (0 within budget, 1 exceeded, 3 inconclusive), `.gates` the gate results, `.report` the
    measurement. A run that cannot happen raises an EdgecompError (the CLI's exit 2).

    device   a profile name, YAML path or DeviceProfile; target: local | ssh://user@host | adb[://SERIAL]
             (default: the profile's); data: a data spec for the accuracy gate (None: latency only);
             budgets default to the profile's. metric=(outputs, labels) -> float (higher is better)
             replaces top-1 in the accuracy gate (with reference= or reference_accuracy= in its units).
             Other keywords go to edgecomp.runtime.verify (reference, reference_accuracy, providers, ...).
    """
    from edgecomp.runtime.verification import verify as run_verify

    return keywords_checked(run_verify, "verify", os.fspath(artifact), as_profile(device), target=target,
                            data_spec=data, latency_budget_ms=latency_budget_ms, percentile=percentile,
                            max_accuracy_drop=max_accuracy_drop, settings=_settings(settings),
                            target_options=target_options, **options)


def profile(
    artifact: str | os.PathLike,
    *,
    device: Any,
    target: str | None = None,
    data: str | None = None,
    settings: MeasureSettings | dict | None = None,
    target_options: TargetOptions | None = None,
    **options: Any,
) -> ProfileReport:
    """Measure `artifact` on the target without gating, as `edgecomp profile`: latency percentiles
    with confidence bounds, memory, and accuracy when `data` has labels."""
    from edgecomp.runtime.harness import profile_artifact

    return keywords_checked(profile_artifact, "profile", os.fspath(artifact), as_profile(device), target=target,
                            data_spec=data, settings=_settings(settings), target_options=target_options, **options)
