"""JUnit XML: one testcase per gate; a breached gate carries <failure>, an inconclusive one <error>
(CI must not treat "too noisy to decide" as a pass), a skipped one <skipped/>. A fleet gets one
<testsuite> per board (runtime.reports.fleet), built from the same pieces."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgecomp.runtime.gates import FAIL, INCONCLUSIVE, SKIPPED, GateResult
from edgecomp.runtime.report import ProfileReport


def counts(gates: list[GateResult]) -> tuple[int, int, int]:
    """(failures, errors, skipped) as JUnit counts them: FAIL, INCONCLUSIVE, SKIPPED gates."""
    return (sum(g.status == FAIL for g in gates), sum(g.status == INCONCLUSIVE for g in gates),
            sum(g.status == SKIPPED for g in gates))


def run_time_s(report: ProfileReport) -> float:
    return float(report.timing.get("loop_s") or 0.0) + float(report.timing.get("warmup_s") or 0.0)


def _suite(name: str, cases: int, failures: int, errors: int, skipped: int, time_s: float) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("testsuites", name="edgecomp verify", tests=str(cases), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{time_s:.3f}")
    suite = add_suite(root, name, cases, failures, errors, skipped, time_s)
    return root, suite


def add_suite(root: ET.Element, name: str, cases: int, failures: int, errors: int, skipped: int,
              time_s: float) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=name, tests=str(cases), failures=str(failures),
                         errors=str(errors), skipped=str(skipped), time=f"{time_s:.3f}")


def add_properties(suite: ET.Element, report: ProfileReport, extra: list[tuple[str, str]] = ()) -> None:
    props = ET.SubElement(suite, "properties")
    rt = report.runtime
    for key, value in [
        *extra,
        ("artifact", report.artifact["path"]),
        ("artifact.sha256", report.artifact["sha256"]),
        ("target", report.target["url"]),
        ("stand_in", str(bool(report.target.get("stand_in"))).lower()),
        ("runtime", f"{rt.get('name')} {rt.get('version')}"),
        ("providers", ",".join(rt.get("providers_used") or [])),
        ("precision", str(rt.get("precision"))),
        ("batch_size", str(report.settings.get("batch_size"))),
    ]:
        ET.SubElement(props, "property", name=key, value=str(value))


def add_gate_cases(suite: ET.Element, classname: str, gates: list[GateResult]) -> None:
    for g in gates:
        case = ET.SubElement(suite, "testcase", classname=classname, name=g.name, time="0")
        if g.status == FAIL:
            el = ET.SubElement(case, "failure", message=g.message, type="BudgetExceeded")
            el.text = g.message
        elif g.status == INCONCLUSIVE:
            el = ET.SubElement(case, "error", message=g.message, type="Inconclusive")
            el.text = g.message
        elif g.status == SKIPPED:
            ET.SubElement(case, "skipped", message=g.message)
        out = ET.SubElement(case, "system-out")
        out.text = g.message


def add_error_case(suite: ET.Element, classname: str, message: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name="run", time="0")
    el = ET.SubElement(case, "error", message=message, type="CouldNotRun")
    el.text = message


def to_xml(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_junit(report: ProfileReport, gates: list[GateResult]) -> str:
    name = f"edgecomp.verify.{report.device['name']}"
    root, suite = _suite(name, len(gates), *counts(gates), run_time_s(report))
    add_properties(suite, report)
    add_gate_cases(suite, name, gates)
    return to_xml(root)


def render_error_junit(message: str, device: str | None = None) -> str:
    name = f"edgecomp.verify.{device or 'unknown'}"
    root, suite = _suite(name, 1, 0, 1, 0, 0.0)
    add_error_case(suite, name, message)
    return to_xml(root)
