"""The pipeline: one path from turns to records for the library and every command."""

import json
import subprocess
import sys

import polars as pl
import pytest

from conftest import run_cli, turn, write_jsonl
from fpi import FailurePointModel, Pipeline, classify, load_traces, write_records
from fpi.contract.records import COLUMN_NAMES


@pytest.mark.slow
def test_classify_explain_and_the_library_give_identical_records(fixture_traces, tmp_path):
    cli_out, library_out = tmp_path / "cli.jsonl", tmp_path / "library.jsonl"
    assert run_cli("classify", fixture_traces, "--explain", "--top-k", "2", "-o", cli_out).exit_code == 0
    write_records(classify(load_traces(fixture_traces), explain_top_k=2), library_out)
    assert cli_out.read_bytes() == library_out.read_bytes()
    first = json.loads(cli_out.read_text().splitlines()[0])
    assert list(first) == list(COLUMN_NAMES)


def test_batch_keeps_row_aligned_frames_of_every_step(fixture_traces):
    turns = load_traces(fixture_traces).head(300)
    batch = Pipeline(FailurePointModel.load()).run(turns)
    for frame in (batch.neighbours, batch.features, batch.verdicts, batch.matches, batch.records):
        assert frame.height == turns.height
    assert batch.features["turn_id"].to_list() == batch.records["turn_id"].to_list() == turns["turn_id"].to_list()
    assert batch.matches.columns == [rule.id for rule in Pipeline().rules.rules]
    decided = batch.records.filter(pl.col("rule").is_not_null())
    assert decided.height > 0
    for record in decided.iter_rows(named=True):
        assert batch.matches.row(turns["turn_id"].to_list().index(record["turn_id"]), named=True)[record["rule"]]


@pytest.mark.parametrize("sample_turns", [100_000, 120])  # the sample is every turn, or some of them
def test_a_whole_input_is_predicted_once_its_sample_heard_on_the_same_scores(fixture_traces, monkeypatch, sample_turns):
    from fpi.pipeline import quantiles
    turns = load_traces(fixture_traces).head(300)
    expected = Pipeline(FailurePointModel.load()).run(turns).records
    monkeypatch.setattr(quantiles, "SAMPLE_TURNS", sample_turns)
    model, predicted = FailurePointModel.load(), []
    scores = model.raw_scores
    monkeypatch.setattr(model, "raw_scores", lambda X, rows=None: predicted.append(len(X) if rows is None else len(rows)) or scores(X, rows))
    records = Pipeline(model).run(turns).records
    assert sum(predicted) == turns.height and len(predicted) == (1 if sample_turns >= turns.height else 2)
    if sample_turns >= turns.height:
        assert records.equals(expected)


def test_sessions_classify_alike_alone_or_together(tmp_path):
    # a batch is whole sessions: splitting the input by session gives the same records
    rows = [turn(turn_id=f"a{i}", session_id="a", turn_index=i, asr={"text": "turn on the light", "confidence": 0.4 + i / 10})
            for i in range(3)]
    rows += [turn(turn_id=f"b{i}", session_id="b", turn_index=i, asr={"text": "play jazz", "confidence": 0.9}) for i in range(2)]
    turns = load_traces(write_jsonl(tmp_path / "t.jsonl", rows))
    together = classify(turns)
    apart = pl.concat([classify(turns.filter(pl.col("session_id") == s)) for s in ("a", "b")])
    assert together.drop("turn_id").equals(apart.drop("turn_id")) and together["turn_id"].equals(apart["turn_id"])


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_rendering_a_report_never_loads_the_model():
    loaded = _modules_after("import fpi.reports.failure_report, fpi.presentation.report_formats, fpi.contract.records, fpi.presentation.plots")
    assert not {"lightgbm", "shap", "fpi.pipeline.model", "fpi.pipeline.explain", "sklearn"} & loaded


def test_the_command_line_loads_no_data_library_until_a_command_runs():
    loaded = _modules_after("import fpi, fpi.cli")
    assert not {"polars", "numpy", "lightgbm", "shap", "pyarrow"} & loaded


def test_the_command_lines_help_shows_each_group_and_loads_its_commands_only_when_it_is_used():
    loaded = _modules_after("from typer.testing import CliRunner; from fpi.cli import app; "
                            "shown = CliRunner().invoke(app, ['--help']).stdout; "
                            "assert all(f'  {group} ' in shown for group in ('rules', 'map', 'label'))")
    assert not {"fpi.cli.rules", "fpi.cli.maps"} & loaded
    assert all(f"  {command} " in run_cli("rules", "--help").stdout for command in ("lint", "check", "test", "fields"))
    assert all(f"  {command} " in run_cli("map", "--help").stdout for command in ("list", "show", "check", "infer"))


def _modules_classifying_with_cached_compiled_trees(training_set, traces, folder, **options) -> set[str]:
    """The modules a fresh process has loaded after a classify of 2,000 turns (with `options`) by the default predictor,
    `auto`, which takes the compiled trees from the cache at any input size."""
    small = FailurePointModel(num_leaves=7, seed=3).fit(training_set, rounds=3)  # its trees compile in a moment
    saved = small.save(folder / "model")
    FailurePointModel.load(saved).compile()  # into the test run's cache, which the fresh process reads too
    return _modules_after(f"from fpi import FailurePointModel, Pipeline, load_traces; "
                          f"pipeline = Pipeline(FailurePointModel.load({str(saved)!r}), predictor='auto', **{options!r}); "
                          f"batch = pipeline.run(load_traces({str(traces)!r})); "
                          "assert pipeline.model.native_ is not None and not pipeline.profile.adapted; "
                          "assert batch.records.height == 2000")


def test_classifying_with_cached_compiled_trees_loads_no_learning_library(small_training_set, fixture_traces, tmp_path):
    """Compiled trees read from the cache predict without LightGBM, so a classify in a fresh process loads neither
    it nor what it imports (scikit-learn, SciPy, pandas), nor what only explaining needs."""
    loaded = _modules_classifying_with_cached_compiled_trees(small_training_set, fixture_traces, tmp_path)
    assert "llvmlite" in loaded
    assert not {"lightgbm", "sklearn", "scipy", "pandas", "shap", "numba", "matplotlib"} & loaded


def test_explaining_with_cached_compiled_trees_loads_no_lightgbm(small_training_set, fixture_traces, tmp_path):
    """TreeSHAP reads the trees from the model's text: `--explain` adds numba (which loads SciPy's top package
    itself), never LightGBM, scikit-learn or pandas."""
    loaded = _modules_classifying_with_cached_compiled_trees(small_training_set, fixture_traces, tmp_path, explain_top_k=3,
                                                              explain_all=True)  # the small model finds little to explain
    assert {"llvmlite", "numba", "fpi.pipeline.treeshap"} <= loaded
    assert not {"lightgbm", "sklearn", "pandas", "shap", "matplotlib"} & loaded


def test_a_streamed_classify_with_cached_compiled_trees_loads_no_learning_library(small_training_set, fixture_traces, tmp_path):
    """The streamed engine spills and merges Arrow record batches; Arrow's own conveniences (`empty_table`,
    `to_numpy`) import pandas, 1.5 s a run, so it uses none."""
    small = FailurePointModel(num_leaves=7, seed=3).fit(small_training_set, rounds=3)
    saved = small.save(tmp_path / "model")
    FailurePointModel.load(saved).compile()
    out = tmp_path / "records.jsonl"
    loaded = _modules_after(f"from fpi.cli import app; app(['classify', {str(fixture_traces)!r}, '-o', {str(out)!r}, "
                            f"'--model', {str(saved)!r}, '--batch-turns', '1000'], standalone_mode=False)")
    assert "fpi.engines.streamed" in loaded and "llvmlite" in loaded
    assert not {"lightgbm", "sklearn", "scipy", "pandas"} & loaded
    assert sum(1 for _ in out.open()) == 2000
