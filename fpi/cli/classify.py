"""`fpi classify`: one verdict per turn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import Classifier, Input, TracesArg, exit_for, guard_paths, options, run, show
from fpi.errors import UsageError


@options
def classify(
    traces: TracesArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Records file (.jsonl, .csv, .parquet); default stdout as JSON Lines.")] = None,
    classifier: Classifier = Classifier(),
    explain: Annotated[bool, typer.Option("--explain", help="Add each turn's top SHAP features (or the deciding rule).")] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Features per explanation.")] = 3,
    explain_all: Annotated[bool, typer.Option("--explain-all", help="Explain `correct` turns too (slower).")] = False,
    bad_records: Input = Input(),
) -> None:
    """Name each turn's failure point (wake, asr, nlu, er, result) or `correct`."""
    def work() -> int:
        from fpi.progress import steps
        from fpi.records import check_output_path, failure_point_counts, write_records
        from fpi.tables import counts_table

        if explain_all and not explain:
            raise UsageError("--explain-all goes with --explain")
        check_output_path(output)
        guard_paths([traces, *classifier.inputs()], [output, bad_records.quarantine_path(traces)])
        with steps(5 if explain else 4, "loading model") as bar:
            pipeline = classifier.pipeline(explain_top_k=top_k if explain else None, explain_all=explain_all)
            bar.advance("reading traces")
            result = bad_records.read(traces)
            batch = pipeline.run(result.turns, on_step=lambda name: bar.advance(name))
        write_records(batch.records, output)
        show([counts_table(failure_point_counts(batch.records), batch.records.height)], stderr=True)
        return exit_for(result)
    run(work)
