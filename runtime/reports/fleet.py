"""A fleet's report files: the JSON document (FleetResult.to_dict), a Markdown summary (one table row
per board, the worst case, then each board's own summary), JUnit XML (one <testsuite> per board, one
testcase per gate; a board that could not run is one errored testcase) and one PNG histogram per board."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from edgecomp.io import write_text
from edgecomp.runtime.fleet import FleetResult, board_latency
from edgecomp.runtime.report import VerifyResult
from edgecomp.runtime.reports import junit
from edgecomp.runtime.reports.histogram import write_histogram
from edgecomp.runtime.reports.markdown import ICONS, _cell, _ms, render_markdown

ICONS_FLEET = {**ICONS, "MEASURED": "📏 MEASURED"}


def _bound(row: dict | None) -> str:
    if row is None:
        return ""
    return f"{_ms(row['lower_bound_ms'])}–{_ms(row['upper_bound_ms'])} ({row['confidence']:.0%})"


def render_fleet_markdown(fleet: FleetResult, title: str = "edgecomp") -> str:
    agg = fleet.aggregate()
    p = f"p{fleet.percentile:g}"
    lines = [f"## {title} {fleet.command}, fleet of {len(fleet.boards)} boards ({fleet.device}): "
             f"{ICONS_FLEET.get(fleet.verdict, fleet.verdict)}", "",
             f"| Board | Target | Verdict | {p} (ms) | {p} bounds (ms) | Budget (ms) | Detail |",
             "|---|---|---|---|---|---|---|"]
    for b in fleet.boards:
        row = board_latency(b, fleet.percentile)
        if b.error is not None:
            detail = b.error
        elif isinstance(b.result, VerifyResult):
            detail = "; ".join(f"{g.name}: {g.status}" for g in b.result.gates)
        else:
            detail = b.report.context_line()
        budget = "" if row is None or row["budget_ms"] is None else f"{row['budget_ms']:g}"
        lines.append(f"| {_cell(b.board.name)} | {_cell(b.board.target)} | {ICONS_FLEET.get(b.verdict, b.verdict)} | "
                     f"{'' if row is None else _ms(row['estimate_ms'])} | {_bound(row)} | {budget} | {_cell(detail)} |")
    worst = agg["worst_latency"]
    lines.append("")
    if worst is not None:
        budget = "" if worst["budget_ms"] is None else f" (budget {worst['budget_ms']:g} ms)"
        lines.append(f"Worst case: **{_cell(worst['board'])}**, {p} {_ms(worst['estimate_ms'])} ms, "
                     f"{worst['confidence']:.0%} upper bound {_ms(worst['upper_bound_ms'])} ms{budget}.")
    lines.append(f"{agg['passed']} passed, {agg['failed']} failed, {agg['inconclusive']} inconclusive, "
                 f"{agg['could_not_run']} could not run; exit {fleet.exit_code} (any FAIL 1 > any could-not-run 2 > "
                 "any INCONCLUSIVE 3 > 0).")
    for b in fleet.boards:
        lines.append("")
        if b.error is not None:
            lines.append(f"## board {b.board.name}: {ICONS['ERROR']}\n\nCould not run: {_cell(b.error)}")
        elif isinstance(b.result, VerifyResult):
            lines.append(render_markdown(b.report, b.result.gates, b.result.verdict, title=f"board {b.board.name}"))
        else:
            lines.append(render_markdown(b.report, title=f"board {b.board.name}"))
    return "\n".join(lines).rstrip("\n") + "\n"


def render_fleet_junit(fleet: FleetResult) -> str:
    """One <testsuite> per board: a testcase per gate, or one errored `run` case for a board that could not run."""
    gates = {b.board.name: (b.result.gates if isinstance(b.result, VerifyResult) else []) for b in fleet.boards}
    all_gates = [g for gs in gates.values() for g in gs]
    errors = sum(b.error is not None for b in fleet.boards)
    failures, inconclusive, skipped = junit.counts(all_gates)
    cases = len(all_gates) + errors
    time_s = sum(junit.run_time_s(b.report) for b in fleet.boards if b.report is not None)
    root = ET.Element("testsuites", name="edgecomp verify", tests=str(cases), failures=str(failures),
                      errors=str(inconclusive + errors), skipped=str(skipped), time=f"{time_s:.3f}")
    for b in fleet.boards:
        name = f"edgecomp.verify.{fleet.device}.{b.board.slug}"
        if b.error is not None:
            suite = junit.add_suite(root, name, 1, 0, 1, 0, 0.0)
            props = ET.SubElement(suite, "properties")
            for key, value in (("board", b.board.name), ("target", b.board.target)):
                ET.SubElement(props, "property", name=key, value=value)
            junit.add_error_case(suite, name, b.error)
            continue
        board_gates = gates[b.board.name]
        suite = junit.add_suite(root, name, len(board_gates), *junit.counts(board_gates), junit.run_time_s(b.report))
        junit.add_properties(suite, b.report, extra=[("board", b.board.name)])
        junit.add_gate_cases(suite, name, board_gates)
    return junit.to_xml(root)


def histogram_path_for(path: str | Path, slug: str) -> Path:
    """lat.png -> lat.<board>.png: one histogram per board."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{slug}{path.suffix or '.png'}")


def write_fleet_reports(fleet: FleetResult, *, json_path=None, markdown_path=None, junit_path=None,
                        histogram_path=None) -> list[Path]:
    """Write the requested fleet report files (every board in each); returns their paths."""
    written: list[Path] = []
    if json_path:
        written.append(write_text(json_path, json.dumps(fleet.to_dict(), indent=2) + "\n"))
    if markdown_path:
        written.append(write_text(markdown_path, render_fleet_markdown(fleet)))
    if junit_path:
        written.append(write_text(junit_path, render_fleet_junit(fleet)))
    if histogram_path:
        slugs = [b.board.slug for b in fleet.boards]
        if len(set(slugs)) < len(slugs):  # names that differ only in characters a file name cannot hold
            slugs = [f"{i}-{slug}" for i, slug in enumerate(slugs, 1)]
        for b, slug in zip(fleet.boards, slugs):
            if b.report is None:
                continue
            row = board_latency(b, fleet.percentile)
            budget = row["budget_ms"] if row else None
            written.append(write_histogram(b.report, histogram_path_for(histogram_path, slug),
                                           budget_ms=budget, percentile=fleet.percentile,
                                           upper_bound_ms=row["upper_bound_ms"] if row else None))
    return written
