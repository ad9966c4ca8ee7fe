"""`fpi sample` and `fpi label merge`: the turns worth labeling, and the labels back onto traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import Classifier, Input, TracesArg, account_for, guard_paths, options, run, say
from fpi.contract.errors import UsageError


@options
def sample(
    traces: TracesArg,
    n: Annotated[int, typer.Option("-n", "--turns", min=1, help="How many turns to choose.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The labeling sheet: .csv (opens in a spreadsheet), .tsv or .jsonl.")],
    seed: Annotated[int, typer.Option(help="Seed for ties; same traces, model and seed give the same sheet.")] = 0,
    classifier: Classifier = Classifier(),
    bad_records: Input = Input(),
) -> None:
    """Choose turns to label, spread over the logs (the model's guesses, confidences, sessions), as a sheet to fill in."""
    def work() -> int:
        from fpi.contract.atomic_files import atomic_write
        from fpi.contract.spreadsheet_cells import neutralised
        from fpi.engines.choice import run as run_engine
        from fpi.engines.plan import Plan
        from fpi.learning.turns_to_label import choose, sheet

        suffix = output.suffix.lower()
        if suffix not in (".csv", ".tsv", ".jsonl"):
            raise UsageError(f"{output}: unknown sheet format {suffix or '(none)'}: expected .csv, .tsv or .jsonl")
        guard_paths([bad_records.mapping_file(), traces, *classifier.inputs()], [output, bad_records.quarantine_path(traces)])
        result = run_engine(Plan(traces, classifier.pipeline(), bad_records.reading(traces), keep_batch=True))
        account_for(result)
        batch = result.batch
        assert batch is not None
        warning = result.profile.message() if result.profile is not None else None
        if warning:
            say(warning)
        rows = sheet(batch, choose(batch, n, seed=seed))
        writers = {".csv": lambda tmp: neutralised(rows).write_csv(tmp), ".tsv": lambda tmp: neutralised(rows).write_csv(tmp, separator="\t"),
                   ".jsonl": lambda tmp: rows.write_ndjson(tmp)}
        atomic_write(output, writers[suffix])
        mix = rows["model_guess"].value_counts().sort("model_guess")
        say(f"wrote {rows.height} turns to label to {output} (model's guesses: "
            + ", ".join(f"{label} {count}" for label, count in mix.iter_rows()) + "); fill the `label` column, then "
            f"`{recommended_command(traces, output)}`")
        return result.exit_code
    run(work)


def recommended_command(traces: str, sheet: Path) -> str:
    """What to run once the sheet is filled: training that chooses its way by cross-validation on the labels."""
    return f"fpi train {traces} --labels {sheet} -o MODEL_DIR"


@options
def merge(
    traces: TracesArg,
    sheet: Annotated[Path, typer.Argument(help="A filled labeling sheet (.csv, .tsv or .jsonl).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Labeled traces to write (.jsonl).")],
    bad_records: Input = Input(),
) -> None:
    """Write the traces with the sheet's labels on them (trace format v1 JSON Lines)."""
    def work() -> int:
        from fpi.learning.label_sheets import labeled_traces, merge_labels, read_sheet
        from fpi.contract.atomic_files import atomic_write_bytes

        guard_paths([bad_records.mapping_file(), traces, sheet], [output, bad_records.quarantine_path(traces)])
        result = bad_records.read(traces)
        filled = read_sheet(sheet)
        turns = merge_labels(result.turns, filled, str(sheet))
        atomic_write_bytes(output, labeled_traces(turns).encode("utf-8"))
        say(f"wrote {turns.height} turns to {output}, {filled.height} labeled from {sheet}")
        return result.exit_code
    run(work)
