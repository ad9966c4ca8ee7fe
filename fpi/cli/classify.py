"""`fpi classify`: one verdict per turn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import Classifier, Input, TracesArg, account_for, guard_paths, options, run, say
from fpi.engines.choice import BATCH_TURNS, DEFAULT_MASTER, Engine
from fpi.presentation.terminal import show


@options
def classify(
    traces: TracesArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Records file (.jsonl, .csv, .parquet); default stdout as JSON "
                                                "Lines. For OpenTelemetry input, a name like x.otlp.json gets the spans "
                                                "back with the verdict on each turn span.")] = None,
    classifier: Classifier = Classifier(),
    explain: Annotated[bool, typer.Option("--explain", help="Add each turn's top SHAP features (or the deciding rule).")] = False,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Features per explanation (default 3; with --explain).")] = None,
    explain_all: Annotated[bool, typer.Option("--explain-all", help="Explain `correct` turns too (slower).")] = False,
    batch_turns: Annotated[int, typer.Option("--batch-turns", min=1000, help="Turns per batch of whole sessions: an input "
                                             "larger than this is classified batch by batch in bounded memory, with the "
                                             "same records (docs/scale.md).")] = BATCH_TURNS,
    engine: Annotated[Engine, typer.Option("--engine", help="local: this process; spark: a Spark session (`fpi-voice[spark]`), "
                                           "records written as a Parquet folder in input order (docs/scale.md).")] = Engine.local,
    master: Annotated[str, typer.Option("--master", help="With --engine spark: the Spark master.")] = DEFAULT_MASTER,
    bad_records: Input = Input(),
) -> None:
    """Name each turn's failure point (wake, asr, nlu, er, result) or `correct`."""
    def work() -> int:
        from fpi.presentation.progress import announce, turns_progress

        announce(traces)  # before polars, LightGBM and the model load: a line within a second
        from fpi.engines.choice import run as run_engine
        from fpi.engines.plan import Plan, sink_for
        from fpi.io.otlp import SpanVerdicts
        from fpi.pipeline.explain import explain_options
        from fpi.presentation.result_tables import counts_table

        explaining = explain_options(explain, top_k, explain_all)
        sink = sink_for(output)
        guard_paths([bad_records.mapping_file(), traces, *classifier.inputs()], [output, bad_records.quarantine_path(traces)],
                    folders=(output,) if output is not None and engine is Engine.spark else ())
        with turns_progress() as progress:
            plan = Plan(traces, classifier.pipeline(**explaining), bad_records.reading(traces), [sink], batch_turns,
                        on_progress=progress)
            outcome = run_engine(plan, engine, master)
        account_for(outcome)
        warning = outcome.profile.message() if outcome.profile is not None else None
        if warning:
            say(warning)
        if isinstance(sink, SpanVerdicts):
            say(f"{sink.marked} turn spans marked with their verdict in {output}")
        show([counts_table(outcome.counts, outcome.classified, sorted(outcome.possible) or None)], stderr=True)
        if not isinstance(sink, SpanVerdicts):
            where = "stdout" if output is None else f"{output} (a Parquet folder)" if outcome.engine == "spark" else output
            say(f"{outcome.classified} records written to {where}")
        scores = outcome.scores()
        if scores is not None:
            say(f"against its labels: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f} "
                "(`fpi eval`: per label; `fpi report`: rates)")  # fits 100 columns
        return outcome.exit_code
    run(work)
