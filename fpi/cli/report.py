"""`fpi report`: where the assistant fails, with intervals, slices and a baseline."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fpi.cli.common import Classifier, Input, account_for, emit, format_option, guard_paths, options, run, say
from fpi.contract.errors import EXIT_OK, UsageError
from fpi.presentation import formats

if TYPE_CHECKING:
    from fpi.engines.plan import Run
    from fpi.reports.counts import Tally


def _sha256(path: str, data: bytes | None) -> str | None:
    """The input's digest for the report header (None for input that is not a file)."""
    import hashlib

    if data is not None:
        return hashlib.sha256(data).hexdigest()
    if not Path(path).is_file():
        return None
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _records(path: str, classifier: Classifier, bad_records: Input, by: list[str]) -> tuple[Tally, Run | None, str | None]:
    """The tally of classified records (a file tallied batch by batch, in bounded memory), or of raw traces
    classified now, by whichever engine suits their size, with the given (or shipped) model; and the
    input's sha256."""
    from dataclasses import replace

    from fpi.engines.choice import run as run_engine
    from fpi.engines.plan import Plan
    from fpi.io.records_files import read_records
    from fpi.io.sniff import is_classified
    from fpi.presentation.progress import turns_progress
    from fpi.reports.counts import Tally, Tallying

    data = sys.stdin.buffer.read() if path == "-" else None  # stdin is read once, then recognised by content
    digest = _sha256(path, data)
    if (data is not None and is_classified(data)) or (data is None and Path(path).is_file() and is_classified(path)):
        if classifier.given():
            raise UsageError(f"{path} is already classified (it has failure_point); --model, --rules and --no-rules "
                             "apply to raw traces")
        if data is not None:
            return Tally.of(read_records(data, name="<stdin>"), by), None, digest
        with turns_progress() as progress:
            return Tally.of_file(path, by, on_progress=lambda read: progress("reading", read, None)), None, digest
    tallying = Tallying(by)
    reading = bad_records.reading(path)
    with turns_progress() as progress:
        plan = Plan(path if data is None else data, classifier.pipeline(), replace(reading, name="<stdin>") if data is not None
                    else reading, [tallying], on_progress=progress)
        result = run_engine(plan)
    account_for(result)
    assert tallying.tally is not None
    return tallying.tally, result, digest


@options
def report(
    records: Annotated[str, typer.Argument(help="`fpi classify` output (.jsonl, .csv, .parquet), or raw traces to classify now.")],
    by_component: Annotated[bool, typer.Option("--by-component", help="Show the defect rate per failure point (the view "
                                               "shown when no --by is given); with --by, show it beside the slices.")] = False,
    by: Annotated[list[str] | None, typer.Option("--by", help="Slice by a field (repeatable): nlu.domain, nlu.intent, "
                                                 "device.type, locale, day, or any column of the records.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Another run (records or traces) to compare with, "
                                                 "e.g. the last release.")] = None,
    output_format: Annotated[str | None, format_option(formats.REPORT, "table (terminal), json, csv, markdown or html "
                                                                      "(default: from -o's extension, else table).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the report to this file (default stdout); "
                                                ".json, .csv, .md or .html sets the format.")] = None,
    date: Annotated[str | None, typer.Option("--date", help="The report's date in its header (default: the day of the latest "
                                             "turn, so the same records give the same report).")] = None,
    min_cell: Annotated[int, typer.Option("--min-cell", min=1, help="Slice values with fewer turns are flagged small.")] = 30,
    top: Annotated[int, typer.Option("--top", min=1, help="Intents, domains, reasons listed per failure point.")] = 3,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0001, max=0.5, help="Significance level of the baseline comparison.")] = 0.05,
    classifier: Classifier = Classifier(),
    bad_records: Input = Input(),
) -> None:
    """Where the assistant fails: defect rate per component with intervals, slices, a baseline, confusion."""
    def work() -> int:
        from fpi.reports.failure_report import build_report

        chosen = formats.report_format(output_format, output)
        if date is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
            raise UsageError(f"--date {date}: expected a day as YYYY-MM-DD")
        guard_paths([bad_records.mapping_file(), records, baseline, *classifier.inputs()], [output, bad_records.quarantine_path(records)])
        current, result, digest = _records(records, classifier, bad_records, by or [])
        before = _records(baseline, classifier, replace(bad_records, quarantine=None), [])[0] if baseline else None
        numbers = build_report(current, source=result.source if result else records, by=by, baseline=before,
                               baseline_source=baseline or "", min_cell=min_cell, top=top, alpha=alpha,
                               input_sha256=digest, date=date, coverage=result.coverage if result else None)
        if by_component and not by:
            say("--by-component: the component table is the report's default view; it adds to --by slices")
        emit(formats.REPORT[chosen](numbers, by_component or not by), output)
        if output is not None:
            say(f"report written to {output}")
        return result.exit_code if result else EXIT_OK
    run(work)
