"""Data from logs is only ever data: no spreadsheet formula in a CSV fpi writes, no escape sequence or
rich markup acting on the terminal, no mathtext in a plot label."""

import json

import polars as pl
import pytest

from conftest import FIXTURES, run_cli
from fpi.contract.spreadsheet_cells import neutral_cell, neutralised, restored
from fpi.presentation.terminal import printable

HOSTILE = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "'=already", "plain", "", "it's"]


def test_formula_cells_get_one_quote_and_read_back_as_written():
    frame = pl.DataFrame({"text": HOSTILE, "number": list(range(-5, 5))})
    written = neutralised(frame)
    assert written["text"].to_list() == ["'=HYPERLINK(\"http://x\")", "'+1+1", "'-2+3", "'@SUM(A1)", "'\tcmd", "'\rcmd",
                                         "''=already", "plain", "", "it's"]
    assert written["number"].to_list() == frame["number"].to_list()
    assert restored(written).equals(frame)
    assert [neutral_cell(v) for v in HOSTILE] == written["text"].to_list()


@pytest.fixture(scope="module")
def hostile_traces(tmp_path_factory):
    """The fixture traces with intents, domains and turn ids that are formulas, escapes, markup and `$`."""
    folder = tmp_path_factory.mktemp("hostile")
    lines = [json.loads(line) for line in (FIXTURES / "traces.jsonl").read_text().splitlines()]
    names = ["=cmd|' /C calc'!A0", "\x1b]0;pwned\x07\x1b[31mred", "[bold red]markup[/]", "$x^2$ price", "@user", "-1"]
    for number, line in enumerate(lines):
        if line.get("nlu"):
            line["nlu"]["intent"] = names[number % len(names)]
            line["nlu"]["domain"] = names[(number + 1) % len(names)]
    lines[0]["turn_id"] = "=1+1"
    path = folder / "hostile.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _no_formula(cells):
    return [c for c in cells if isinstance(c, str) and c[:1] in ("=", "+", "-", "@", "\t", "\r")]


@pytest.mark.slow
def test_records_sheets_errors_and_report_csv_hold_no_formula(hostile_traces, tmp_path):
    assert run_cli("classify", hostile_traces, "-o", tmp_path / "records.csv").exit_code == 0
    assert run_cli("sample", hostile_traces, "-n", "200", "-o", tmp_path / "sheet.csv").exit_code == 0
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text("".join(json.dumps({**json.loads(line), "label": "asr"}) + "\n"
                               for line in hostile_traces.read_text().splitlines()))
    assert run_cli("eval", labeled, "--errors", tmp_path / "errors.csv").exit_code == 0
    assert run_cli("report", tmp_path / "records.csv", "--by", "nlu.intent", "-o", tmp_path / "report.csv").exit_code == 0
    for name in ("records.csv", "sheet.csv", "errors.csv", "report.csv"):
        cells = pl.read_csv(tmp_path / name, infer_schema=False).unpivot(variable_name="_column", value_name="_cell")["_cell"].to_list()
        assert _no_formula(cells) == [], name
    sheet = pl.read_csv(tmp_path / "sheet.csv", infer_schema=False)
    assert "'=1+1" in sheet["turn_id"].to_list() or sheet.filter(pl.col("intent").str.starts_with("'")).height


def test_records_csv_reads_back_to_the_same_report_as_jsonl(hostile_traces, tmp_path):
    run_cli("classify", hostile_traces, "-o", tmp_path / "records.csv")
    run_cli("classify", hostile_traces, "-o", tmp_path / "records.jsonl")
    reports = [json.loads(run_cli("report", tmp_path / name, "--by", "nlu.intent", "--format", "json").stdout)
               for name in ("records.csv", "records.jsonl")]
    for report in reports:
        report.pop("source"), report.pop("about")
    assert reports[0] == reports[1]


@pytest.mark.slow
def test_escape_sequences_and_markup_do_not_reach_the_terminal(hostile_traces):
    report = run_cli("report", hostile_traces, "--by", "nlu.intent")
    turn = run_cli("explain", hostile_traces, "--turn", "=1+1")
    for result in (report, turn):
        assert result.exit_code == 0 and "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;pwned" in report.stdout and "\\x1b[31mred" in report.stdout and "[bold red]markup[/]" in report.stdout


def test_printable_escapes_controls_and_bidi_but_keeps_layout():
    assert printable("a\x1b[2Jb\x07\x9b\u202ec\td\n") == "a\\x1b[2Jb\\x07\\x9b\\u202ec\td\n"


def test_a_dollar_in_names_draws_as_text_in_the_html_report(hostile_traces, tmp_path):
    result = run_cli("report", hostile_traces, "--by", "nlu.domain", "-o", tmp_path / "report.html")
    assert result.exit_code == 0 and "$x^2$ price" in (tmp_path / "report.html").read_text()


def test_markdown_reports_and_ci_annotations_carry_no_escape_sequence(hostile_traces, tmp_path):
    from fpi.presentation.ci_formats import github_errors

    result = run_cli("report", hostile_traces, "--by", "nlu.intent", "--format", "markdown")
    assert result.exit_code == 0 and "\x1b" not in result.stdout and "\\x1b[31mred" in result.stdout
    assert "\x1b" not in github_errors(["traces.jsonl:3: intent \x1b[2J is unknown"])
