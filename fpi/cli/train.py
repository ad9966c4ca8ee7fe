"""`fpi train` and `fpi adapt`: a model from your own traces, labeled or not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fpi.cli.common import Input, LabeledArg, TracesArg, guard_paths, options, run, say
from fpi.learning.methods import Method
from fpi.contract.errors import UsageError
from fpi.presentation.terminal import show

if TYPE_CHECKING:
    from fpi.learning.training import Training
    from fpi.pipeline.model import FailurePointModel

FromOpt = Annotated[str | None, typer.Option("--from", help="The model to continue from, or to take weak labels from: "
                                             "`default` (the shipped one, when not given) or a model directory.")]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="Model directory to write.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the validation split and LightGBM.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the model already in --output.")]


def check_model_output(output: Path, force: bool) -> None:
    """A model is written only into a new folder, or over a model folder with --force: never over a file
    or a folder of other things."""
    from fpi.pipeline.model_folder import BOOSTER_FILE, METADATA_FILE, is_model_dir

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
    others = sorted(entry.name for entry in output.iterdir() if entry.name not in (BOOSTER_FILE, METADATA_FILE))
    if others:
        raise UsageError(f"{output} holds files fpi did not write ({', '.join(others[:5])}); --force replaces a model "
                         "folder only: move them, or give another folder")


def _base(name: str | None) -> FailurePointModel | None:
    from fpi.pipeline.model import FailurePointModel

    if name is None:
        return None
    return FailurePointModel.load(None if name == "default" else Path(name))


def _report(training: Training, output: Path) -> None:
    from fpi.presentation.result_tables import metrics_tables

    model = training.model
    gold = sum(training.gold.values())
    say(f"learned from {gold} gold labels (" + ", ".join(f"{k} {v}" for k, v in training.gold.items() if v) + ")"
        + (f" and {training.weak.summary()}" if training.weak else ""))
    say(training.summary())
    if model.validation_metrics_:
        say("out of fold, every gold label scored by a model that did not learn from it:")
        show(metrics_tables(model.validation_metrics_), stderr=True)
    say(f"model written to {output}")


@options
def train(
    traces: LabeledArg,
    output: OutputOpt,
    base: FromOpt = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="A filled labeling sheet (`fpi sample`): its labels go "
                                                "onto these traces by turn_id.")] = None,
    method: Annotated[Method, typer.Option("--method", help="auto: continue from the --from model on logs like its "
                                           "training data unless training from scratch is clearly better in "
                                           "cross-validation on your labels; from scratch on logs out of its depth. "
                                           "Or one way: scratch, continue, weak (from scratch, with weak labels from "
                                           "the --from model where users' reactions agree).")] = Method.auto,
    unlabeled: Annotated[bool, typer.Option("--unlabeled", help="The same as --method weak.")] = False,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    bad_records: Input = Input(),
) -> None:
    """Train a failure-point model on your labeled traces (every turn, or the few hundred of a filled `fpi sample` sheet);
    the way of learning is chosen by cross-validation on your labels, and said with its spread."""
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
        how = "weak" if unlabeled else method.value
        named = "the shipped model" if base in (None, "default") else str(base)
        training = fit(turns, base=_base(base), method=how, seed=seed, base_name=named)
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
