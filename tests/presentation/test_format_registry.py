"""Every output format is named once, in one registry: the commands offer exactly its names, refuse
others as a usage error, and every writer renders what it is handed."""

import json
from pathlib import Path

import pytest
from conftest import run_cli

from fpi.contract.errors import UsageError
from fpi.presentation import formats


def test_the_commands_offer_the_registrys_formats(fixture_traces):
    for command, kind in (("report", formats.REPORT), ("gate", formats.GATE), ("eval", formats.SCORES),
                          ("validate", formats.PROBLEMS), ("explain", formats.TURN)):
        shown = run_cli(*command.split(), "--help").stdout
        assert "<" + "|".join(kind) + ">" in shown, command
    refused = run_cli("eval", fixture_traces, "--format", "yaml")
    assert refused.exit_code == 2 and "'yaml' is not one of 'table', 'json'." in refused.stderr


def test_the_report_format_follows_the_output_name():
    assert formats.report_format(None, None) == "table"
    assert formats.report_format(None, Path("r.md")) == "markdown" and formats.report_format("json", Path("r.json")) == "json"
    for given, output, message in ((None, Path("r.txt"), "cannot tell the format"), ("table", Path("r.md"), "goes to the terminal"),
                                   ("csv", Path("r.json"), "says json but --format says csv")):
        with pytest.raises(UsageError, match=message):
            formats.report_format(given, output)


def test_problem_writers_put_each_form_where_it_goes():
    from fpi.contract.errors import Problem

    problems = [Problem("rules.yaml", 3, "R001", "bad")]
    text = formats.PROBLEMS["text"](problems, "fpi rules lint", "1 problem")
    assert (text.stdout, text.stderr) == ("", "rules.yaml:3: R001 bad\n1 problem\n")
    assert json.loads(formats.PROBLEMS["json"](problems, "fpi rules lint", "1 problem").stdout)["problems"][0]["code"] == "R001"
    github = formats.PROBLEMS["github"](problems, "fpi rules lint", "1 problem")
    assert github.stdout.startswith("::error file=rules.yaml,line=3") and github.stderr == "1 problem\n"


@pytest.mark.slow
def test_every_report_writer_renders_the_same_numbers(fixture_traces):
    from fpi import build_report, classify

    report = build_report(classify(fixture_traces), source="fixtures", by=["nlu.domain"])
    rendered = {name: write(report, True).stdout for name, write in formats.REPORT.items()}
    assert json.loads(rendered["json"])["turns"] == 2000
    assert all(f"{report['turns']} turns" in text for name, text in rendered.items() if name not in ("csv", "json"))
    assert rendered["html"].startswith("<!DOCTYPE html>") and rendered["csv"].startswith("table,failure_point")
