"""`fpi explain`: why a turn got its verdict, or what matters across all turns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fpi.cli.common import Classifier, Input, TracesArg, account_for, emit, format_option, guard_paths, options, run, say
from fpi.contract.errors import UsageError
from fpi.presentation import formats

if TYPE_CHECKING:
    from fpi.pipeline.classify import Pipeline


@options
def explain(
    traces: TracesArg,
    turn: Annotated[str | None, typer.Option("--turn", help="Explain this turn_id: stages, probabilities and a SHAP waterfall.")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="Global importance per failure point: table, JSON and PNG plots.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for the files: with --turn, TURN.json and "
                                                "TURN-waterfall.png (shap's waterfall plot); with --summary, importance.json "
                                                "and bar/beeswarm plots.")] = None,
    output_format: Annotated[str, format_option(formats.TURN, "With --turn: table (terminal) or json (stdout).")] = "table",
    sample: Annotated[int, typer.Option(min=1, help="Turns sampled for --summary.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the --summary sample.")] = 0,
    classifier: Classifier = Classifier(),
    bad_records: Input = Input(),
) -> None:
    """Show why fpi named a failure point: one turn (--turn) or the whole set (--summary)."""
    def work() -> int:
        if (turn is None) == (not summary):
            raise UsageError("give either --turn TURN_ID or --summary -o DIR")
        if summary and output is None:
            raise UsageError("--summary needs -o DIR for its JSON and plots")
        if summary and output_format == "json":
            raise UsageError("--format json goes with --turn (--summary writes importance.json into -o DIR)")
        guard_paths([bad_records.mapping_file(), traces, *classifier.inputs()], [output, bad_records.quarantine_path(traces)],
                    folders=(output,) if output is not None else ())
        pipeline = classifier.pipeline()
        if turn is not None:
            return _one_turn(traces, turn, output, output_format, pipeline, bad_records)
        assert output is not None
        return _summary(traces, output, sample, seed, pipeline, bad_records)
    run(work)


def _one_turn(traces: str, turn: str, output: Path | None, output_format: str, pipeline: Pipeline, bad_records: Input) -> int:
    """One turn: its stages, probabilities and SHAP waterfall (with -o, shap's waterfall PNG and the JSON)."""
    import json

    from fpi.contract.atomic_files import atomic_write_bytes
    from fpi.engines.choice import run as run_engine
    from fpi.engines.plan import Plan
    from fpi.pipeline.explain import explain_turn, waterfall_png
    from fpi.pipeline.features import DESCRIPTIONS

    result = run_engine(Plan(traces, pipeline, bad_records.reading(traces), keep_batch=True))
    account_for(result)
    batch = result.batch
    assert batch is not None
    records = batch.records.filter(batch.records["turn_id"] == turn)
    record = records.row(0, named=True) if records.height else {}
    explained = explain_turn(turn, batch.turns, batch.features, pipeline.model, explained_class=record.get("model_failure_point"),
                             probabilities=record.get("probabilities"))  # classify's, on the same pipeline
    if output is not None:
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in turn)
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output / f"{name}.json", (json.dumps(explained.to_json(record), indent=2) + "\n").encode())
        waterfall_png(explained, output / f"{name}-waterfall.png")
        say(f"wrote {name}.json and {name}-waterfall.png to {output}")
    emit(formats.TURN[output_format](explained, record, DESCRIPTIONS))
    return result.exit_code


def _summary(traces: str, output: Path, sample: int, seed: int, pipeline: Pipeline, bad_records: Input) -> int:
    """Global importance per failure point over a sample of turns: a table, importance.json and shap's plots."""
    from fpi.pipeline.explain import summarize
    from fpi.pipeline.features import build_features
    from fpi.presentation.progress import steps
    from fpi.presentation.result_tables import importance_table
    from fpi.presentation.terminal import show

    read = bad_records.read(traces)
    features = build_features(read.turns, reference=pipeline.model.reference_)
    with steps(min(sample, features.height), "explaining") as bar:
        numbers = summarize(features, pipeline.model, output, sample=sample, seed=seed, on_progress=lambda n: bar.advance(steps=n))
    show([importance_table(numbers)])
    say(f"wrote importance.json and bar/beeswarm plots per failure point to {output}")
    return read.exit_code
