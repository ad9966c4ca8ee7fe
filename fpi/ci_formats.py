"""A gate's verdict in the formats CI systems read: JUnit XML (Jenkins/Ant) and GitHub
Actions workflow commands (annotations on the policy's lines)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fpi.gate import GateResult


def junit_xml(result: GateResult) -> bytes:
    """One testsuite per group of checks, one testcase per check (Jenkins/Ant JUnit XML)."""
    groups = {"model": "model quality floors", "defect_rate": "defect-rate ceilings", "regression": "regression limits"}
    root = ET.Element("testsuites", name="fpi gate", tests=str(len(result.checks)), failures=str(result.count("fail")),
                      errors="0", time="0")
    for group, title in groups.items():
        checks = [c for c in result.checks if c.group == group]
        if not checks:
            continue
        suite = ET.SubElement(root, "testsuite", name=f"fpi gate: {title}", tests=str(len(checks)),
                              failures=str(sum(c.status == "fail" for c in checks)), errors="0",
                              skipped=str(sum(c.status == "skipped" for c in checks)), time="0")
        properties = ET.SubElement(suite, "properties")
        for key in ("policy", "source", "data_fingerprint", "model_fingerprint"):
            ET.SubElement(properties, "property", name=key, value=str(result.context[key]))
        for check in checks:
            threshold = "-" if check.threshold is None else f"{check.threshold:.4f}"
            case = ET.SubElement(suite, "testcase", classname=f"fpi.gate.{group}", name=f"{check.name} {check.op} {threshold}",
                                 time="0")
            if check.status == "fail":
                failure = ET.SubElement(case, "failure", type="threshold", message=check.message())
                failure.text = f"value {check.value:.6f}, threshold {check.op} {check.threshold:.6f}; {check.detail}\n" \
                               f"policy {result.context['policy']}:{check.policy_line}"
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.detail)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(result: GateResult) -> str:
    """GitHub Actions workflow commands: an error per failed check, a warning per skipped one,
    each pointing at the policy line, and a notice with the summary."""
    lines = []
    for check in result.checks:
        if check.status == "pass":
            continue
        level = "error" if check.status == "fail" else "warning"
        lines.append(f"::{level} file={_escape_property(result.context['policy'])},line={check.policy_line},"
                     f"title={_escape_property('fpi gate ' + check.name)}::{_escape_data(check.message())}")
    lines.append(f"::notice title=fpi gate::{_escape_data(result.summary())}")
    return "\n".join(lines) + "\n"
