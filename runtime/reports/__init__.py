"""Report writers: JSON (machine), Markdown (CI job summary), JUnit XML (one testcase per gate),
PNG histogram. Every file is written atomically (edgecomp.io)."""

from __future__ import annotations

import json
from pathlib import Path

from edgecomp.exit_codes import ExitCode
from edgecomp.formats import stamp
from edgecomp.io import write_text
from edgecomp.runtime.report import ProfileReport, VerifyResult
from edgecomp.runtime.reports.histogram import write_histogram
from edgecomp.runtime.reports.junit import render_error_junit, render_junit
from edgecomp.runtime.reports.markdown import render_error_markdown, render_markdown


def write_reports(
    result: VerifyResult | ProfileReport,
    *,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    junit_path: str | Path | None = None,
    histogram_path: str | Path | None = None,
) -> list[Path]:
    """Write the requested report files; returns their paths."""
    written: list[Path] = []
    if isinstance(result, VerifyResult):
        report, gates, verdict, doc = result.report, result.gates, result.verdict, result.to_dict()
    else:
        report, gates, verdict, doc = result, None, None, result.to_dict()
    if json_path:
        written.append(write_text(json_path, json.dumps(doc, indent=2) + "\n"))
    if markdown_path:
        written.append(write_text(markdown_path, render_markdown(report, gates, verdict)))
    if junit_path:
        written.append(write_text(junit_path, render_junit(report, gates or [])))
    if histogram_path:
        budget = pct = upper = None
        if gates:
            lat = next((g for g in gates if g.name.startswith("latency") and g.threshold is not None), None)
            if lat is not None:
                budget, pct = lat.threshold, lat.details.get("percentile")
                upper = lat.details.get("upper_bound_ms")  # the gate's bound (widened for an unstable run)
        pct = pct or report.settings.get("percentile")
        written.append(write_histogram(report, histogram_path, budget_ms=budget, percentile=pct, upper_bound_ms=upper))
    return written


def write_error_reports(message: str, *, device: str | None = None, markdown_path=None, junit_path=None,
                        json_path=None) -> None:
    """On a could-not-run failure, still leave CI-readable files that say so."""
    if markdown_path:
        write_text(markdown_path, render_error_markdown(message))
    if junit_path:
        write_text(junit_path, render_error_junit(message, device))
    if json_path:
        doc = stamp({"verdict": "ERROR", "exit_code": int(ExitCode.COULD_NOT_RUN), "error": message}, "verify-report")
        write_text(json_path, json.dumps(doc, indent=2) + "\n")


__all__ = ["render_junit", "render_markdown", "write_error_reports", "write_histogram", "write_reports"]
