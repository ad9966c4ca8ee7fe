"""Every output format fpi writes, named once: for each kind of result, a dict from the format's name to
the writer that renders it. A writer returns what goes to stdout (or to the `-o` file) and what goes to
stderr; commands take their `--format` choices from these dicts. Writers import what they draw with
when they run, so the command line stays light."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpi.contract.errors import UsageError


@dataclass(frozen=True)
class Shown:
    """A result rendered: the text for stdout (or the output file), and the text for stderr."""

    stdout: str = ""
    stderr: str = ""


def _json(data: object, sort_keys: bool = True) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"


# ------------------------------------------------------------------ `fpi report`

def _report_table(report: Any, with_components: bool) -> Shown:
    from fpi.presentation.report_formats import print_report
    from fpi.presentation.terminal import rendered

    return Shown(rendered(lambda console: print_report(report, console, with_components)))


def _report_csv(report: Any, with_components: bool) -> Shown:
    from fpi.presentation.report_formats import csv_text

    return Shown(csv_text(report))


def _report_markdown(report: Any, with_components: bool) -> Shown:
    from fpi.presentation.report_formats import markdown

    return Shown(markdown(report, with_components))


def _report_html(report: Any, with_components: bool) -> Shown:
    from fpi.presentation.report_formats import html_page

    return Shown(html_page(report, with_components))


REPORT: dict[str, Callable[[Any, bool], Shown]] = {
    "table": _report_table, "json": lambda report, with_components: Shown(_json(report)), "csv": _report_csv,
    "markdown": _report_markdown, "html": _report_html}
REPORT_SUFFIXES = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


def report_format(given: str | None, output: Path | None) -> str:
    """--format as given, else as -o's extension says; a table goes to the terminal only."""
    implied = REPORT_SUFFIXES.get(output.suffix.lower()) if output is not None else None
    if given is None:
        if output is not None and implied is None:
            raise UsageError(f"-o {output}: cannot tell the format from {output.suffix or 'no extension'!r}; "
                             f"name it {', '.join(REPORT_SUFFIXES)} or give --format json, csv, markdown or html")
        return implied or "table"
    if given == "table" and output is not None:
        raise UsageError("-o needs --format json, csv, markdown or html (a table goes to the terminal)")
    if implied is not None and implied != given:
        raise UsageError(f"-o {output} says {implied} but --format says {given}; drop one of them")
    return given


# ------------------------------------------------------------------ `fpi gate`

def _gate_human(outcome: Any) -> Shown:
    from fpi.presentation.result_tables import gate_context, gate_table
    from fpi.presentation.terminal import lines_text, tables_text

    return Shown(lines_text(gate_context(outcome)) + tables_text([gate_table(outcome)]))


def _gate_github(outcome: Any) -> Shown:
    from fpi.presentation.ci_formats import github_annotations

    return Shown(github_annotations(outcome))


GATE: dict[str, Callable[[Any], Shown]] = {"human": _gate_human, "json": lambda outcome: Shown(outcome.to_text()),
                                           "github": _gate_github}


# ------------------------------------------------------------------ problems in files people wrote (lint, validate)

def _problems_text(problems: list[Any], tool: str, summary: str) -> Shown:
    return Shown(stderr="".join(f"{p.file}:{p.line}: {p.code} {p.message}\n" for p in problems) + summary + "\n")


def _problems_github(problems: list[Any], tool: str, summary: str) -> Shown:
    from fpi.presentation.ci_formats import problem_annotations

    return Shown(problem_annotations(problems, tool), summary + "\n")


PROBLEMS: dict[str, Callable[[list[Any], str, str], Shown]] = {
    "text": _problems_text, "github": _problems_github,
    "json": lambda problems, tool, summary: Shown(_json({"problems": [p.to_json() for p in problems], "summary": summary},
                                                        sort_keys=False))}


# ------------------------------------------------------------------ `fpi eval`

def _scores_table(scored: dict) -> Shown:
    from fpi.presentation.result_tables import metrics_tables
    from fpi.presentation.terminal import lines_text, tables_text

    text = tables_text(metrics_tables(scored["model"], scored.get("human")))
    if "human" in scored:
        text += lines_text([f"annotator macro-F1 {scored['human']['macro_f1']:.4f}; model = "
                            f"{scored['model_pct_of_human_macro_f1']:.1f}% of human performance"])
    return Shown(text)


SCORES: dict[str, Callable[[dict], Shown]] = {"table": _scores_table, "json": lambda scored: Shown(_json(scored))}


# ------------------------------------------------------------------ `fpi rules check`

def _audit_table(audit: Any) -> Shown:
    from fpi.presentation.result_tables import RULE_AUDIT_LEGEND, rule_audit_table
    from fpi.presentation.terminal import lines_text, tables_text

    return Shown(tables_text([rule_audit_table(audit)]) + lines_text([RULE_AUDIT_LEGEND]))


RULE_AUDIT: dict[str, Callable[[Any], Shown]] = {"table": _audit_table, "json": lambda audit: Shown(_json(audit.to_json()))}


# ------------------------------------------------------------------ `fpi explain --turn`

def _turn_table(explained: Any, record: dict, descriptions: dict[str, str]) -> Shown:
    from rich.console import Console
    from rich.text import Text

    from fpi.presentation.display_tables import print_table
    from fpi.presentation.result_tables import explanation_tables, stages_table
    from fpi.presentation.terminal import rendered

    def draw(console: Console) -> None:
        one = explained.turn
        console.print(Text.assemble((f"turn {one['turn_id']}", "bold"), f" (session {one['session_id']}, index "
                                    f"{one['turn_index']}, {one.get('timestamp') or 'no timestamp'})"))
        print_table(stages_table(one), console)
        verdict = Text.assemble("failure point ", (record["failure_point"], "bold"), f"; model says {record['model_failure_point']}")
        if record["rule"]:
            verdict.append("; decided by rule ").append(record["rule"], style="bold")
        if one.get("label"):
            verdict.append(f"; gold label {one['label']}")
        console.print(verdict)
        for table in explanation_tables(explained, descriptions):
            print_table(table, console)
    return Shown(rendered(draw))


TURN: dict[str, Callable[[Any, dict, dict[str, str]], Shown]] = {
    "table": _turn_table,
    "json": lambda explained, record, descriptions: Shown(_json(explained.to_json(record), sort_keys=False))}
