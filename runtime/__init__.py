"""edgecomp's measurement harness: run an artifact on the device (or a stand-in), time it soundly,
check its accuracy, gate CI on latency/accuracy budgets and write JSON/Markdown/JUnit/PNG reports.

    report = runtime.profile_artifact("out/model.onnx", profile, target="local", data_spec="fashion-mnist:test")
    result = runtime.verify("out/", profile, latency_budget_ms=5, percentile=90, max_accuracy_drop=0.01)
    result.exit_code  # 0 within budget, 1 exceeded, 3 inconclusive (could-not-run raises, exit 2)
    fleet = runtime.verify_fleet("out/", profile, runtime.read_fleet_file("fleet.yaml"), latency_budget_ms=5)
    fleet.exit_code   # 1 any board FAILs > 2 any could not run > 3 any INCONCLUSIVE > 0 (runtime.fleet)
"""

from edgecomp.runtime.compare import CompareResult, PairDiff, compare_outputs
from edgecomp.runtime.fleet import Board, BoardResult, FleetResult, profile_fleet, read_fleet_file, verify_fleet
from edgecomp.runtime.gates import GateResult
from edgecomp.runtime.harness import MeasureSettings, TargetOptions, measure, profile_artifact
from edgecomp.runtime.reference import ReferenceSpec
from edgecomp.runtime.report import ProfileReport, VerifyResult
from edgecomp.runtime.reports import write_reports
from edgecomp.runtime.stats import LatencyStats, min_samples_for_percentile, summarize
from edgecomp.runtime.verification import verify

__all__ = [
    "Board",
    "BoardResult",
    "FleetResult",
    "CompareResult",
    "GateResult",
    "LatencyStats",
    "MeasureSettings",
    "PairDiff",
    "ProfileReport",
    "ReferenceSpec",
    "TargetOptions",
    "VerifyResult",
    "compare_outputs",
    "measure",
    "min_samples_for_percentile",
    "profile_artifact",
    "profile_fleet",
    "read_fleet_file",
    "summarize",
    "verify",
    "verify_fleet",
    "write_reports",
]
