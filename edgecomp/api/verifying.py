"""edgecomp.verify() and edgecomp.profile(): measure an artifact on the target, as the CLI does.
A list of targets, or fleet= (a fleet file or its boards), measures every board at once and returns a
FleetResult (edgecomp.runtime.fleet; docs/fleet.md)."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Sequence, Union

from edgecomp.api.devices import as_profile
from edgecomp.api.keywords import keywords_checked
from edgecomp.errors import UserInputError
from edgecomp.runtime.fleet import Board, FleetResult, boards_from_targets, check_distinct, parse_fleet, read_fleet_file
from edgecomp.runtime.harness import MeasureSettings, TargetOptions
from edgecomp.runtime.report import ProfileReport, VerifyResult

Targets = Union[str, Sequence[str], None]
Fleet = Union[str, os.PathLike, Sequence[Union[Board, dict]], None]


def _settings(settings: MeasureSettings | dict | None) -> MeasureSettings | None:
    if isinstance(settings, dict):
        return keywords_checked(MeasureSettings, "settings", **settings)
    return settings


def _boards(target: Targets, fleet: Fleet, options: TargetOptions | None) -> list[Board] | None:
    """The fleet's boards, or None for one target (a plain string or None: the profile's)."""
    if fleet is not None and target is not None:
        raise UserInputError("give either fleet= or target=, not both (list every board in the fleet)")
    if isinstance(fleet, (str, os.PathLike)):
        return read_fleet_file(fleet, defaults=options)
    if fleet is not None:
        entries = list(fleet)
        if entries and all(isinstance(b, Board) for b in entries):
            check_distinct(entries, where="fleet=")
            return entries
        return parse_fleet(entries, where="fleet=", defaults=options)
    if target is None or isinstance(target, str):
        return None
    return boards_from_targets(list(target), options)


def _fleet_keywords(template: Callable, what: str, options: dict) -> None:
    """The same check keywords_checked makes, for a fleet run (whose keywords go to `template`)."""
    known = inspect.signature(template).parameters
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserInputError(f"{what}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                             f"the options are {', '.join(n for n, p in known.items() if p.default is not p.empty)}")


def verify(
    artifact: str | os.PathLike,
    *,
    device: Any,
    target: Targets = None,
    data: str | None = None,
    latency_budget_ms: float | None = None,
    percentile: float | None = None,
    max_accuracy_drop: float | None = 0.01,
    settings: MeasureSettings | dict | None = None,
    target_options: TargetOptions | None = None,
    fleet: Fleet = None,
    **options: Any,
) -> VerifyResult | FleetResult:
    """Measure `artifact` (.onnx/.ort, TensorRT .engine/.plan, or a compress output directory) on the
    target and gate it, as `edgecomp verify`. Returns a VerifyResult: `.exit_code` is the CLI's
    (0 within budget, 1 exceeded, 3 inconclusive), `.gates` the gate results, `.report` the
    measurement. A run that cannot happen raises an EdgecompError (the CLI's exit 2).

    device   a profile name, YAML path or DeviceProfile; target: local | ssh://user@host | adb[://SERIAL]
             (default: the profile's); data: a data spec for the accuracy gate (None: latency only);
             budgets default to the profile's. metric=(outputs, labels) -> float (higher is better)
             replaces top-1 in the accuracy gate (with reference= or reference_accuracy= in its units).
             Other keywords go to edgecomp.runtime.verify (reference, reference_accuracy, providers, ...).
    fleet    a fleet file (YAML/JSON), or its boards as a list of dicts ({"name", "target", ...}) or of
             runtime.fleet.Board; a list of target URLs does the same. Every board is measured at once
             and a FleetResult comes back: `.boards` (each a VerifyResult or the error that stopped it),
             `.aggregate()`, and `.exit_code` (1 any FAIL > 2 any could not run > 3 any INCONCLUSIVE > 0).
             target_options are every board's defaults.
    """
    from edgecomp.runtime.verification import prepare_verify, verify as run_verify

    boards = _boards(target, fleet, target_options)
    if boards is not None:
        from edgecomp.runtime.fleet import verify_fleet

        options = dict(options, data_spec=data, latency_budget_ms=latency_budget_ms, percentile=percentile,
                       max_accuracy_drop=max_accuracy_drop, settings=_settings(settings))
        _fleet_keywords(prepare_verify, "verify", options)
        return verify_fleet(os.fspath(artifact), as_profile(device), boards, **options)
    return keywords_checked(run_verify, "verify", os.fspath(artifact), as_profile(device), target=target,
                            data_spec=data, latency_budget_ms=latency_budget_ms, percentile=percentile,
                            max_accuracy_drop=max_accuracy_drop, settings=_settings(settings),
                            target_options=target_options, **options)


def profile(
    artifact: str | os.PathLike,
    *,
    device: Any,
    target: Targets = None,
    data: str | None = None,
    settings: MeasureSettings | dict | None = None,
    target_options: TargetOptions | None = None,
    fleet: Fleet = None,
    **options: Any,
) -> ProfileReport | FleetResult:
    """Measure `artifact` on the target without gating, as `edgecomp profile`: latency percentiles
    with confidence bounds, memory, and accuracy when `data` has labels. A list of targets or fleet=
    (as for verify) measures every board at once and returns a FleetResult (exit_code 2 if any board
    could not run, else 0)."""
    from edgecomp.runtime.harness import prepare_measurement, profile_artifact

    boards = _boards(target, fleet, target_options)
    if boards is not None:
        from edgecomp.runtime.fleet import profile_fleet

        options = dict(options, data_spec=data, settings=_settings(settings))
        _fleet_keywords(prepare_measurement, "profile", options)
        return profile_fleet(os.fspath(artifact), as_profile(device), boards, **options)
    return keywords_checked(profile_artifact, "profile", os.fspath(artifact), as_profile(device), target=target,
                            data_spec=data, settings=_settings(settings), target_options=target_options, **options)
