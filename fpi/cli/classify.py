"""`fpi classify`: one verdict per turn."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fpi.cli.common import Classifier, Input, TracesArg, exit_for, guard_paths, options, run, say, show, streams
from fpi.contract.errors import EXIT_PARTIAL, UsageError


class Engine(str, Enum):
    local = "local"
    spark = "spark"

if TYPE_CHECKING:
    from fpi.pipeline.classify import Batch, Pipeline


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
                                             "same records (docs/scale.md).")] = 200_000,
    engine: Annotated[Engine, typer.Option("--engine", help="local: this process; spark: a Spark session (`fpi-voice[spark]`), "
                                           "records written as a Parquet folder in input order (docs/scale.md).")] = Engine.local,
    master: Annotated[str, typer.Option("--master", help="With --engine spark: the Spark master.")] = "local[2]",
    bad_records: Input = Input(),
) -> None:
    """Name each turn's failure point (wake, asr, nlu, er, result) or `correct`."""
    from fpi.contract.metrics import evaluate, scores
    from fpi.io.otlp import is_otlp_path
    from fpi.presentation.progress import PipelineProgress, turns_progress
    from fpi.contract.records import failure_point_counts
    from fpi.io.records_files import check_output_path, write_records
    from fpi.presentation.result_tables import counts_table

    def work() -> int:
        from fpi.pipeline.explain import explain_options

        explain_options(explain, top_k, explain_all)
        spans_out = is_otlp_path(output)
        if not spans_out:
            check_output_path(output)
        guard_paths([bad_records.mapping_file(), traces, *classifier.inputs()], [output, bad_records.quarantine_path(traces)])
        if engine is Engine.spark:
            return classify_on_spark()
        if not spans_out and streams(traces, bad_records, batch_turns):
            return classify_streamed()
        with turns_progress() as progress:
            pipeline = make_pipeline()
            progress("reading", 0, None)
            result = bad_records.read(traces)
            turns = result.turns.height
            progress("reading", turns, turns)
            phases = PipelineProgress(progress, turns)
            batch = pipeline.run(result.turns, on_step=phases.step, on_explained=phases.explained)
            if output is not None:  # records for stdout are written once the bar is gone, so they do not mix
                phases.step("writing")
                if spans_out:
                    if result.otlp is None:
                        raise UsageError(f"{output}: spans can be written back only for OpenTelemetry input; name the "
                                         "records .jsonl, .csv or .parquet")
                    say(f"{write_spans(result.otlp, result.source, batch, output)} turn spans marked with their verdict "
                        f"in {output}")
                else:
                    write_records(batch.records, output)
            phases.finish()
        if output is None:
            write_records(batch.records, None)
        labels = batch.turns["label"]
        labeled = labels.len() > 0 and labels.null_count() == 0
        close(failure_point_counts(batch.records), batch.records.height, None if spans_out else output or "-", result.source,
              evaluate(labels.to_list(), batch.records["failure_point"].to_list()) if labeled else None)
        return exit_for(result)

    def classify_streamed() -> int:
        from fpi.cli.common import account_for
        from fpi.engines.streamed import classify_file

        with turns_progress() as progress:
            result = classify_file(traces, make_pipeline(), output or "-", batch_turns=batch_turns,
                                   on_error=bad_records.on_error.value, on_progress=progress)
        account_for(result, traces, bad_records.quarantine)
        close(result.counts, result.written, output or "-", result.source, scores(result.confusion) if result.labeled else None)
        return EXIT_PARTIAL if result.rejected else 0

    def classify_on_spark() -> int:
        if output is None or output.suffix != ".parquet":
            raise UsageError("--engine spark writes a Parquet folder: give -o NAME.parquet")
        if traces == "-" or not _json_lines(Path(traces)):
            raise UsageError("--engine spark classifies a JSON Lines file (trace format v1, or another shape with --mapping); "
                             "read other input with the local engines (docs/scale.md)")
        try:
            from fpi.engines import spark
        except ImportError as exc:
            raise UsageError(f"--engine spark needs pyspark: pip install 'fpi-voice[spark]' ({exc})") from exc
        from fpi.cli.common import account_for
        from fpi.engines.streamed import StreamResult
        from fpi.pipeline.explain import explain_options

        rejected: list = []
        with spark.running(master) as session:
            records = spark.classify(session.read.text(traces), model=classifier.model, rules=classifier.rules,
                                     no_rules=classifier.no_rules, source=traces, on_error=bad_records.on_error.value,
                                     **explain_options(explain, top_k, explain_all),
                                     on_rejected=rejected.extend, mapping=bad_records.mapping)
            spark.write_parquet(records, output)
            written = session.read.parquet(str(output)).count()
        account_for(StreamResult(traces, read=written + len(rejected), rejected=rejected), traces, bad_records.quarantine)
        say(f"{written} records written to {output} (a Parquet folder)")
        return EXIT_PARTIAL if rejected else 0

    def make_pipeline() -> Pipeline:
        from fpi.pipeline.explain import explain_options

        return classifier.pipeline(**explain_options(explain, top_k, explain_all))

    def close(counts: dict[str, int], written: int, where: Path | str | None, source: str, labeled: dict | None) -> None:
        """What was classified, where the records went (None: said already) and, with gold labels, how right they were."""
        show([counts_table(counts, written)], stderr=True)
        if where is not None:
            say(f"{written} records written to {'stdout' if str(where) == '-' else where}")
        if labeled is not None:
            say(f"against the labels in {source}: accuracy {labeled['accuracy']:.3f}, macro-F1 {labeled['macro_f1']:.3f} "
                "(`fpi eval` for each label's scores, `fpi report` for defect rates)")
    run(work)


def _json_lines(path: Path) -> bool:
    """Whether the file (or, gzipped, its content: Spark reads .gz) holds JSON records one a line, not CSV,
    Parquet or spans, by its first bytes."""
    import gzip

    from fpi.io.sniff import detect_format

    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                head = handle.read(1 << 16)
    except (OSError, EOFError):
        return True  # the engine names what is wrong with it
    return detect_format(head) == "jsonl"


def write_spans(spans: bytes, source: str, batch: Batch, output: Path) -> int:
    """The input spans with each turn span's verdict: failure point, confidence, deciding rule, reasons."""
    import polars as pl

    from fpi.io.otlp import KEY_COLUMN, write_back

    reasons = pl.col("explanation").struct.field("features").list.eval(pl.element().struct.field("name"))
    rows = batch.records.select(
        pl.Series(KEY_COLUMN, batch.turns[KEY_COLUMN]),
        pl.col("failure_point").alias("fpi.failure_point"),
        pl.col("confidence").alias("fpi.confidence"),
        pl.col("rule").alias("fpi.rule"),
        (reasons if "explanation" in batch.records.columns else pl.lit(None, pl.List(pl.String))).alias("fpi.reasons"))
    verdicts = {row.pop(KEY_COLUMN): row for row in rows.to_dicts()}
    return write_back(spans, source, verdicts, output)
