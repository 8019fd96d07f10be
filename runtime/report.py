"""The measurement report (one JSON document) and the verification result built on it.

Every number travels with its context: runtime name and version, execution providers requested and
actually used, precision, batch size, threads, graph optimisation level, target and the harness
settings. Raw per-iteration latencies (ms) are kept under latency.samples_ms so any statistic can
be recomputed. Infinite values (a confidence bound the sample count cannot give) are written as
null, keeping the JSON strict. Each document starts with its format version (edgecomp.formats:
"profile-report" for a measurement, "verify-report" for a verification).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

from edgecomp import __version__
from edgecomp.formats import stamp
from edgecomp.io import to_jsonable
from edgecomp.runtime.compare import CompareResult
from edgecomp.runtime.gates import GateResult, verdict
from edgecomp.runtime.stats import LatencyStats


def finite(obj: Any) -> Any:
    """Replace inf/nan by None so the JSON is strict (an unbounded confidence bound reads as null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ProfileReport:
    artifact: dict[str, Any]
    device: dict[str, Any]
    target: dict[str, Any]
    runtime: dict[str, Any]
    settings: dict[str, Any]
    inputs: dict[str, Any]
    latency: LatencyStats
    timing: dict[str, Any]
    memory: dict[str, Any]
    accuracy: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None
    compare: CompareResult | None = None
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    edgecomp_version: str = __version__

    def context_line(self) -> str:
        """'onnxruntime 1.32.0 [CPUExecutionProvider] fp32, batch 1, threads 2 on local (stand-in)'."""
        rt = self.runtime
        threads = rt.get("threads")
        where = self.target.get("url", "?") + (" (stand-in)" if self.target.get("stand_in") else "")
        return (f"{rt.get('name')} {rt.get('version')} [{', '.join(rt.get('providers_used') or [])}] "
                f"{rt.get('precision') or '?'}, batch {self.settings.get('batch_size')}, "
                f"threads {threads if threads is not None else 'default'} on {where}")

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        if self.compare is not None:
            d["compare"]["passed"] = self.compare.passed
        return stamp(finite(d), "profile-report")


@dataclass
class VerifyResult:
    exit_code: int
    gates: list[GateResult]
    report: ProfileReport

    @property
    def verdict(self) -> str:
        return verdict(self.exit_code)

    def to_dict(self) -> dict[str, Any]:
        return stamp({
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "gates": finite(to_jsonable(self.gates)),
            "report": self.report.to_dict(),
        }, "verify-report")
