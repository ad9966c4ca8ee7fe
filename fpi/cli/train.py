"""`fpi train`: a model from your labeled traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import Input, LabeledArg, exit_for, options, run, say, show


@options
def train(
    traces: LabeledArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Model directory to write.")],
    seed: Annotated[int, typer.Option(help="Seed for the validation split and LightGBM.")] = 0,
    valid_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of sessions held out for early stopping.")] = 0.15,
    bad_records: Input = Input(),
) -> None:
    """Train a failure-point model on your labeled traces."""
    def work() -> int:
        from fpi.model import FailurePointModel
        from fpi.progress import steps
        from fpi.tables import metrics_tables

        result = bad_records.read(traces)
        estimator = FailurePointModel(seed=seed, valid_fraction=valid_fraction)
        with steps(estimator.n_estimators, "training") as bar:
            estimator.fit(result.turns, on_iteration=lambda i, total: bar.update(i, total))
        estimator.save(output)
        metrics = estimator.validation_metrics_
        say(f"validation ({estimator.training_rows_['valid']} turns, {estimator.best_iteration_} rounds): "
            f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
        show(metrics_tables(metrics), stderr=True)
        say(f"model written to {output}")
        return exit_for(result)
    run(work)
