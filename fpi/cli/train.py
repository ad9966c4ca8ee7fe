"""`fpi train` and `fpi adapt`: a model from your own traces, labeled or not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fpi.cli.common import Input, LabeledArg, TracesArg, guard_paths, options, run, say
from fpi.contract.errors import UsageError
from fpi.presentation.terminal import show

if TYPE_CHECKING:
    from fpi.learning.training import Training
    from fpi.pipeline.model import FailurePointModel

FromOpt = Annotated[str | None, typer.Option("--from", help="Continue from a model: `default` (the shipped one) or a model "
                                             "directory. Few labels then go a long way.")]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="Model directory to write.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the validation split and LightGBM.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the model already in --output.")]


def check_model_output(output: Path, force: bool) -> None:
    """A model is written only into a new folder, or over a model folder with --force: never over a file
    or a folder of other things."""
    from fpi.pipeline.model_folder import is_model_dir

    if not output.exists():
        return
    if not output.is_dir():
        raise UsageError(f"{output} is a file; -o takes a folder for the model (booster.txt, model.json)")
    if not is_model_dir(output):
        if any(output.iterdir()):
            raise UsageError(f"{output} is a folder of other files, not a model; give a new or empty folder")
        return
    if not force:
        raise UsageError(f"{output} already holds a model; add --force to replace it")


def _base(name: str | None) -> FailurePointModel | None:
    from fpi.pipeline.model import FailurePointModel

    if name is None:
        return None
    return FailurePointModel.load(None if name == "default" else Path(name))


def _report(training: Training, output: Path) -> None:
    from fpi.presentation.result_tables import metrics_tables

    model = training.model
    metrics = model.validation_metrics_
    gold = sum(training.gold.values())
    how = "out-of-fold over all labels" if model.training_rows_.get("valid") == 0 else f"{model.training_rows_['valid']} held-out turns"
    say(f"learned from {gold} gold labels (" + ", ".join(f"{k} {v}" for k, v in training.gold.items() if v) + ")"
        + (f" and {training.weak.summary()}" if training.weak else ""))
    rounds = f"{model.best_iteration_ - model.init_rounds_} new rounds" + (f" over {model.init_rounds_} continued" if model.init_rounds_ else "")
    if not metrics:
        say(f"no gold labels, so no validation ({rounds})")
    else:
        say(f"validation ({how}; {rounds}): accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
        show(metrics_tables(metrics), stderr=True)
    say(f"model written to {output}")


@options
def train(
    traces: LabeledArg,
    output: OutputOpt,
    base: FromOpt = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="A filled labeling sheet (`fpi sample`): its labels go "
                                                "onto these traces by turn_id.")] = None,
    unlabeled: Annotated[bool, typer.Option("--unlabeled", help="Also learn from turns without a label, where the user's "
                                            "reaction agrees with a confident verdict (weak labels).")] = False,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    valid_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of sessions held out for early stopping "
                                                  "(5,000 labels or more; fewer are cross-validated).")] = 0.15,
    bad_records: Input = Input(),
) -> None:
    """Train a failure-point model on your traces: every turn with a label, or a few hundred with --from."""
    def work() -> int:
        from fpi.learning.label_sheets import merge_labels, read_sheet
        from fpi.learning.training import train as fit

        guard_paths([bad_records.mapping_file(), traces, labels, None if base in (None, "default") else base], [output, bad_records.quarantine_path(traces)],
                    folders=(output,))
        check_model_output(output, force)
        result = bad_records.read(traces)
        turns = result.turns
        if labels is not None:
            turns = merge_labels(turns, read_sheet(labels), str(labels))
        training = fit(turns, base=_base(base), unlabeled=unlabeled, seed=seed, valid_fraction=valid_fraction)
        training.model.save(output)
        _report(training, output)
        return result.exit_code
    run(work)


@options
def adapt(
    traces: TracesArg,
    output: OutputOpt,
    base: FromOpt = "default",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    bad_records: Input = Input(),
) -> None:
    """Fit a model to your unlabeled logs: their own confidence scales, and self-training where implicit feedback agrees."""
    def work() -> int:
        from fpi.learning.training import adapt as fit

        guard_paths([bad_records.mapping_file(), traces, None if base == "default" else base], [output, bad_records.quarantine_path(traces)], folders=(output,))
        check_model_output(output, force)
        result = bad_records.read(traces)
        start = _base(base)
        assert start is not None
        training = fit(result.turns, base=start, seed=seed)
        training.model.save(output)
        _report(training, output)
        return result.exit_code
    run(work)
