"""A report's numbers (`fpi.reports.failure_report.build_report`) as display tables for a terminal,
Markdown, CSV or one self-contained HTML page with plots. Every format reads the same numbers and
formats rates the same way, so they agree."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.text import Text

from fpi.contract.records import OUT_OF_DEPTH, out_of_depth_warning
from fpi.contract.spreadsheet_cells import neutral_cell
from fpi.contract.trace_format import COMPONENTS
from fpi.presentation.display_tables import DisplayTable, html_table, markdown_table, md_escape, print_table
from fpi.reports.failure_report import Rate, Report, SliceRates, components_of, coverage_lines

DEFECTS = "defects"  # the column/row of all defects together


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def rate_cell(cell: Rate) -> str:
    """A rate with its 95% interval, e.g. `3.65% [2.91, 4.56]`."""
    return f"{percent(cell['rate'])} [{100 * cell['ci_low']:.2f}, {100 * cell['ci_high']:.2f}]"


def _listing(items: list[dict], key: str) -> str:
    return ", ".join(f"{item[key]} ({item['turns']})" for item in items) or "-"


def header(report: Report) -> list[str]:
    """Who made the report, from what, and when: the lines above every format's tables."""
    about = report["about"]
    models = ", ".join(about["models"]) or "not recorded in the records"
    rules = ", ".join(about["rules"]) or "not recorded in the records"
    mixed = " (records of several runs)" if len(about["models"]) > 1 or len(about["rules"]) > 1 else ""
    shift = about.get("shift")
    lines = [f"fpi {about['fpi']}; model {models}; rules {rules}{mixed}" + (f"; shift {shift:.2f}" if shift is not None else "")]
    if shift is not None and shift >= OUT_OF_DEPTH:
        lines.append(out_of_depth_warning(shift))
    where = f"{report['turns']} turns from {report['source']}" + (f" (sha256 {about['input_sha256'][:16]})" if about["input_sha256"] else "")
    days = f"turns of {about['first_day']} to {about['last_day']}" if about["first_day"] else "no timestamps"
    lines.append(f"{where}; {days}; report date {about['date'] or '-'}")
    return lines + coverage_lines(report)


def verdict(report: Report) -> tuple[str, str] | None:
    """With a baseline, the top line: which components got significantly worse or better; and its
    tone (worse, better, or no significant change)."""
    if "baseline" not in report:
        return None
    base = report["baseline"]
    rows = {row["failure_point"]: row for row in base["components"]}

    def changes(names: list[str]) -> str:
        return ", ".join(f"{name} {100 * rows[name]['change']:+.2f} pp (p {rows[name]['p_value']:.4f})" for name in names)
    parts = [f"worse: {changes(base['verdict']['worse'])}"] if base["verdict"]["worse"] else []
    parts += [f"better: {changes(base['verdict']['better'])}"] if base["verdict"]["better"] else []
    if base["verdict"]["unchanged"]:
        parts.append(f"no significant change: {', '.join(base['verdict']['unchanged'])}")
    overall = base["overall"]
    parts.append(f"all defects {100 * overall['change']:+.2f} pp ({overall['verdict']})")
    tone = "worse" if base["verdict"]["worse"] else "better" if base["verdict"]["better"] else "no significant change"
    return f"Against {base['source']}: " + "; ".join(parts), tone


def tables(report: Report, with_components: bool = True) -> list[DisplayTable]:
    """The report as tables: per component (unless `with_components` is off), confusion, baseline, slices."""
    has_reasons = any(row["top_reasons"] for row in report["components"])
    components = DisplayTable(
        "components", f"Failure points of {report['turns']} turns ({report['source']}): defect rate with 95% Wilson interval",
        ["failure point", "turns", "rate [95% CI]", "share of defects", "top intents", "top domains", "top reasons",
         "rules in", "rules out"],
        note="" if has_reasons else "top reasons: run `fpi classify --explain` first to see the SHAP features behind each failure point.")
    by_label = {row["failure_point"]: row for row in report["components"]}
    for label in (*COMPONENTS, "correct"):
        row = by_label.get(label)
        if row is None:  # a stage the logs lack: no row
            continue
        components.rows.append([
            label, str(row["turns"]), rate_cell(row),
            "-" if row["share_of_defects"] is None else percent(row["share_of_defects"]),
            _listing(row["top_intents"], "value"), _listing(row["top_domains"], "value"), _listing(row["top_reasons"], "feature"),
            _listing(row["rules_in"], "rule"), _listing(row["rules_out"], "rule")])
        if label == [c for c in COMPONENTS if c in by_label][-1]:
            overall = report["overall"]
            components.rows.append(["all defects", str(overall["turns"]), rate_cell(overall), percent(1.0) if overall["turns"] else "-",
                                    "", "", "", "", ""])
    out = [components] if with_components else []
    if "confusion" in report:
        confusion = report["confusion"]
        t = DisplayTable("confusion", f"Predicted vs gold failure point ({confusion['turns']} labeled turns; accuracy {confusion['accuracy']:.4f}, "
                  f"macro-F1 {confusion['macro_f1']:.4f})", ["gold \\ predicted", *confusion["labels"]])
        for label, row in zip(confusion["labels"], confusion["matrix"], strict=True):
            t.rows.append([label, *map(str, row)])
        out.append(t)
    if "baseline" in report:
        base = report["baseline"]
        t = DisplayTable("baseline", f"Against the baseline {base['source']} ({base['baseline_turns']} turns)",
                  ["failure point", "rate", "baseline", "change [95% CI]", "p", "verdict"],
                  note=f"change: percentage points, Newcombe interval; p: two-proportion z-test; significant at p < {base['alpha']}.")
        for row in [*base["components"], {"failure_point": "all defects", **base["overall"]}]:
            t.rows.append([row["failure_point"], percent(row["rate"]), percent(row["baseline_rate"]),
                           f"{100 * row['change']:+.2f} [{100 * row['change_ci_low']:+.2f}, {100 * row['change_ci_high']:+.2f}]",
                           f"{row['p_value']:.4f}", row["verdict"]])
        out.append(t)
    slices = list(report["slices"])
    by_day = report.get("by_day")
    if by_day and not any(s["field"] == "day" for s in slices):
        slices.append(by_day)
    for table in slices:
        shown = components_of(table)
        t = DisplayTable(f"slice:{table['field']}", f"By {table['field']}: rate of each failure point [95% CI]",
                  [table["field"], "turns", *shown, "all defects", "flag"],
                  note=f"flag `small`: fewer than {table['min_cell']} turns; read its rates with care.")
        for value in table["values"]:
            t.rows.append([value["value"], str(value["turns"]), *(rate_cell(value["rates"][c]) for c in (*shown, DEFECTS)),
                           "small" if value["small"] else ""])
        out.append(t)
    return out


# ------------------------------------------------------------------ text formats

TONES = {"worse": "bold red", "better": "bold green", "no significant change": "bold"}


def print_report(report: Report, console: Console, with_components: bool = True) -> None:
    for line in header(report):
        console.print(Text(line, style="dim"))
    top_line = verdict(report)
    if top_line:
        console.print(Text(top_line[0], style=TONES[top_line[1]]))
    for table in tables(report, with_components):
        print_table(table, console)


def markdown(report: Report, with_components: bool = True) -> str:
    parts = ["# fpi report", "", *(f"{md_escape(line)}  " for line in header(report)), ""]
    top_line = verdict(report)
    if top_line:
        parts += [f"**{md_escape(top_line[0])}**", ""]
    for table in tables(report, with_components):
        parts += markdown_table(table)
    return "\n".join(parts)


CSV_COLUMNS = ["table", "failure_point", "field", "value", "turns", "count", "rate", "ci_low", "ci_high", "share_of_defects",
               "small", "baseline_rate", "change", "change_ci_low", "change_ci_high", "p_value", "significant"]


class _NeutralWriter(csv.DictWriter):
    """The csv module's writer, each text cell spreadsheet-safe (`fpi.contract.spreadsheet_cells`)."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: neutral_cell(value) for key, value in rowdict.items()})


def csv_text(report: Report) -> str:
    """One long table: a row per (table, failure point, slice value), numbers unformatted."""
    buffer = io.StringIO()
    writer = _NeutralWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["components"]:
        writer.writerow({"table": "components", "failure_point": row["failure_point"], "turns": report["turns"], "count": row["turns"],
                         "rate": row["rate"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                         "share_of_defects": row["share_of_defects"]})
    overall = report["overall"]
    writer.writerow({"table": "components", "failure_point": DEFECTS, "turns": report["turns"], "count": overall["turns"],
                     "rate": overall["rate"], "ci_low": overall["ci_low"], "ci_high": overall["ci_high"], "share_of_defects": 1.0})
    by_day = report.get("by_day")
    slices: list[SliceRates] = list(report["slices"]) + ([by_day] if by_day else [])
    for table in slices:
        for value in table["values"]:
            for name in (*components_of(table), DEFECTS):
                cell = value["rates"][name]
                writer.writerow({"table": "by_day" if table is by_day else "slice", "failure_point": name,
                                 "field": table["field"], "value": value["value"], "turns": value["turns"], "count": cell["count"],
                                 "rate": cell["rate"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"], "small": value["small"]})
    if "baseline" in report:
        base = report["baseline"]
        for row in [*base["components"], {"failure_point": DEFECTS, **base["overall"]}]:
            writer.writerow({"table": "baseline", "failure_point": row["failure_point"], "turns": base["turns"], "count": row["turns"],
                             **{k: row[k] for k in ("rate", "baseline_rate", "change", "change_ci_low", "change_ci_high",
                                                    "p_value", "significant")}})
    if "confusion" in report:
        confusion = report["confusion"]
        for gold, row in zip(confusion["labels"], confusion["matrix"], strict=True):
            for predicted, count in zip(confusion["labels"], row, strict=True):
                writer.writerow({"table": "confusion", "failure_point": predicted, "field": "label", "value": gold,
                                 "turns": confusion["turns"], "count": count})
    return buffer.getvalue()


# ------------------------------------------------------------------ HTML

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px; color: #1d2330; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2.2rem; }
.meta { color: #5b6475; }
table { border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e3e6ec; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f6f9; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
td:first-child { white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid #c9ced8; }
tr.small td { color: #8a5a00; background: #fff8e6; }
.note { color: #5b6475; font-style: italic; }
.worse { color: #b3261e; font-weight: 600; } .better { color: #1b7f3b; font-weight: 600; }
.lead { font-size: 1.05rem; }
.verdict { padding: .6rem .9rem; border-radius: 6px; border-left: 5px solid; background: #f4f6f9; font-size: 1.02rem; }
.verdict.worse { border-color: #b3261e; background: #fdecea; } .verdict.better { border-color: #1b7f3b; background: #e9f6ee; }
.verdict.same { border-color: #5b6475; font-weight: 600; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; }
"""


def html_page(report: Report, with_components: bool = True) -> str:
    """One self-contained page: inline styles, tables, and plots as inline SVG (no network)."""
    from fpi.presentation.plots import report_figures

    figures = report_figures(report)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>fpi report: {html.escape(report['source'])}</title><style>{STYLE}</style></head><body>",
        "<h1>Where the assistant fails</h1>",
        *(f'<p class="meta">{html.escape(line)}</p>' for line in header(report)),
        f'<p class="lead">All defects: {rate_cell(report["overall"])} of turns (95% Wilson interval).</p>',
    ]
    top_line = verdict(report)
    if top_line:
        tone = {"worse": "worse", "better": "better"}.get(top_line[1], "same")
        parts.append(f'<p class="verdict {tone}">{html.escape(top_line[0])}</p>')
    for table in tables(report, with_components):
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        for caption, svg in figures.get(table.key, []):
            parts.append(f"<figure>{svg}<figcaption class=\"note\">{html.escape(caption)}</figcaption></figure>")
        parts.append(html_table(table))
    parts.append('<p class="meta">Made by fpi. Rates are shares of all turns; intervals are 95% Wilson score intervals.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
