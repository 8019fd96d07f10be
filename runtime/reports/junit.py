"""JUnit XML: one testcase per gate; a breached gate carries <failure>, an inconclusive one <error>
(CI must not treat "too noisy to decide" as a pass), a skipped one <skipped/>."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgecomp.runtime.gates import FAIL, INCONCLUSIVE, SKIPPED, GateResult
from edgecomp.runtime.report import ProfileReport


def _suite(name: str, cases: int, failures: int, errors: int, skipped: int, time_s: float) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("testsuites", name="edgecomp verify", tests=str(cases), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{time_s:.3f}")
    suite = ET.SubElement(root, "testsuite", name=name, tests=str(cases), failures=str(failures),
                          errors=str(errors), skipped=str(skipped), time=f"{time_s:.3f}")
    return root, suite


def render_junit(report: ProfileReport, gates: list[GateResult]) -> str:
    name = f"edgecomp.verify.{report.device['name']}"
    failures = sum(g.status == FAIL for g in gates)
    errors = sum(g.status == INCONCLUSIVE for g in gates)
    skipped = sum(g.status == SKIPPED for g in gates)
    time_s = float(report.timing.get("loop_s") or 0.0) + float(report.timing.get("warmup_s") or 0.0)
    root, suite = _suite(name, len(gates), failures, errors, skipped, time_s)
    props = ET.SubElement(suite, "properties")
    rt = report.runtime
    for key, value in [
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
    for g in gates:
        case = ET.SubElement(suite, "testcase", classname=name, name=g.name, time="0")
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
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_error_junit(message: str, device: str | None = None) -> str:
    name = f"edgecomp.verify.{device or 'unknown'}"
    root, suite = _suite(name, 1, 0, 1, 0, 0.0)
    case = ET.SubElement(suite, "testcase", classname=name, name="run", time="0")
    el = ET.SubElement(case, "error", message=message, type="CouldNotRun")
    el.text = message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
