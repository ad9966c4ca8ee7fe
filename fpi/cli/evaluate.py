"""`fpi eval`: scores against gold labels, and the metrics file the gate reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fpi.cli.common import Classifier, Input, TracesArg, account_for, emit, format_option, guard_paths, options, run, say
from fpi.contract.errors import UsageError
from fpi.presentation import formats

if TYPE_CHECKING:
    from fpi.engines.plan import Run


@options
def evaluate(
    traces: TracesArg,
    classifier: Classifier = Classifier(),
    output_format: Annotated[str, format_option(formats.SCORES, "table (terminal) or json (stdout).")] = "table",
    human: Annotated[str | None, typer.Option(help="Field with one annotator's labels (e.g. human_label): score the "
                                              "annotator too and report the model as % of human macro-F1.")] = None,
    save_metrics: Annotated[Path | None, typer.Option("--save-metrics", help="Also write the metrics, defect rates and the "
                                                      "model, rules and data fingerprints to this JSON file: the "
                                                      "baseline `fpi gate --baseline` reads.")] = None,
    errors: Annotated[Path | None, typer.Option("--errors", help="Also write the misclassified turns (ids, gold and predicted "
                                                "failure point, confidence, the deciding rule, top SHAP reasons, what "
                                                "ASR heard and NLU decided) to this file: .jsonl, .csv or .parquet.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Also draw the confusion matrix to this image "
                                                "(.png or .svg).")] = None,
    bad_records: Input = Input(),
) -> None:
    """Score the model against gold labels (the turns that have one): accuracy, macro-F1, per-label P/R/F1, confusion."""
    def work() -> int:
        from fpi.contract.atomic_files import atomic_write_bytes
        from fpi.engines.choice import run as run_engine
        from fpi.engines.plan import Plan
        from fpi.io.records_files import check_output_path
        from fpi.pipeline.explain import explain_options
        from fpi.presentation.progress import turns_progress

        if human is not None and not human.strip():
            raise UsageError("--human takes the name of a field with one annotator's labels, e.g. --human human_label")
        if output is not None and output.suffix.lower() not in (".png", ".svg"):
            raise UsageError(f"-o {output}: the confusion matrix is drawn as .png or .svg")
        guard_paths([bad_records.mapping_file(), traces, *classifier.inputs()],
                    [save_metrics, errors, output, bad_records.quarantine_path(traces)])
        if errors is not None:
            check_output_path(errors)
        pipeline = classifier.pipeline(**explain_options(errors is not None, explain_all=errors is not None))
        with turns_progress() as progress:
            plan = Plan(traces, pipeline, bad_records.reading(traces, labels_required=True), fingerprint=True,
                        keep_batch=human is not None or errors is not None, on_progress=progress)
            result = run_engine(plan)
        account_for(result)
        if result.unlabeled:
            say(f"scored the {result.scored} turns with a gold label; the other {result.unlabeled} of {result.turns} have none")
        metrics = result.metrics(pipeline)
        if save_metrics is not None:
            atomic_write_bytes(save_metrics, metrics.to_text().encode("utf-8"))
            say(f"metrics written to {save_metrics}")
        if errors is not None:
            _write_errors(result, errors)
        scores = metrics.metrics
        assert scores is not None
        if output is not None:
            from fpi.presentation.plots import confusion_image

            confusion_image(scores["confusion"], output, f"{result.source}: {scores['turns']} turns, accuracy "
                            f"{scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}")
            say(f"confusion matrix drawn in {output}")
        emit(formats.SCORES[output_format](_scored(result, scores, human)))
        return result.exit_code
    run(work)


def _write_errors(result: Run, errors: Path) -> None:
    """The misclassified turns, with their reasons, for a person to read."""
    from fpi.contract.metrics import misclassified
    from fpi.io.records_files import write_records

    assert result.batch is not None
    wrong = misclassified(result.batch.turns, result.batch.records)
    write_records(wrong, errors)
    say(f"{wrong.height} misclassified turns written to {errors}")


def _scored(result: Run, scores: dict, human: str | None) -> dict:
    """The model's scores, and with `--human` the annotator's and the model as a share of them."""
    from fpi.contract.metrics import annotator_labels, score_against_annotator

    scored: dict = {"source": result.source, "model": scores}
    if human:
        assert result.batch is not None
        turns = result.batch.turns
        annotator = annotator_labels(turns, human, result.source)
        scored.update(score_against_annotator(turns["label"].to_list(), result.batch.records["failure_point"].to_list(), annotator))
    return scored
