"""A gate's verdict in the formats CI systems read: JUnit XML (Jenkins/Ant), GitHub Actions
workflow commands (annotations on the policy's lines) and a Markdown job summary; and, when the
gate could not run at all, the same formats saying so, so a CI step that publishes them finds them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from fpi.contract.errors import Problem
from fpi.presentation.terminal import printable
from fpi.reports.gate import GateResult


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
        if result.context.get("stages_lacking"):  # no testcase checks them: say why
            ET.SubElement(properties, "property", name="stages_lacking", value=", ".join(result.context["stages_lacking"]))
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
    """A workflow command's text: no escape sequence from data reaches the CI log (`printable`)."""
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


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


def junit_error_xml(problems: list[str]) -> bytes:
    """The gate could not run (usage, policy or input error): one testcase in error, with every problem."""
    root = ET.Element("testsuites", name="fpi gate", tests="1", failures="0", errors="1", time="0")
    suite = ET.SubElement(root, "testsuite", name="fpi gate", tests="1", failures="0", errors="1", skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", classname="fpi.gate", name="the gate runs", time="0")
    error = ET.SubElement(case, "error", type="fpi error", message=problems[0] if problems else "error")
    error.text = "\n".join(problems) + "\n"
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


_AT = re.compile(r"^(?P<file>[^:\s][^:]*):(?P<line>\d+): (?P<message>.*)$")


def github_errors(problems: list[str]) -> str:
    """An `::error` annotation per problem, on its file and line when the message names them."""
    lines = []
    for problem in problems:
        at = _AT.match(problem)
        where = f" file={_escape_property(at['file'])},line={at['line']}," if at else " "
        lines.append(f"::error{where}title=fpi gate::{_escape_data(at['message'] if at else problem)}")
    return "\n".join(lines) + "\n"


def problem_annotations(problems: list[Problem], tool: str) -> str:
    """An `::error` annotation per problem of a file a user wrote, on its line, titled by its code."""
    return "".join(f"::error file={_escape_property(p.file)},line={p.line},"
                   f"title={_escape_property(f'{tool} {p.code}')}::{_escape_data(p.message)}\n" for p in problems)


def markdown_summary(result: GateResult, context: list[str]) -> str:
    """The verdict for a CI job summary (`$GITHUB_STEP_SUMMARY`): a heading, what was measured, the checks."""
    from fpi.presentation.display_tables import markdown_table
    from fpi.presentation.result_tables import gate_table

    mark = "✅" if result.exit_code == 0 else "❌"
    parts = [f"# {mark} fpi {result.summary()}", "", *[f"- {line}" for line in context], ""]
    table = gate_table(result)
    table.title = "checks"
    return "\n".join([*parts, *markdown_table(table)])
