"""Learning from few labels: sampling turns to label, merging a filled sheet, continuing from a
model, weak labels and adapting to unlabeled logs; a stage that does not exist never the verdict."""

import csv
import json

import numpy as np
import polars as pl
import pytest

from conftest import FIXTURES, run_cli
from fpi import FailurePointModel, Pipeline, load_traces, simulate
from fpi.learning.training import adapt, train
from fpi.pipeline.model import impossible
from fpi.simulation.simulator import write_traces
from fpi.learning.weak_labels import signals


@pytest.fixture(scope="module")
def telephone(tmp_path_factory):
    """Unlabeled and labeled traces of an assistant with no wake word and no ER."""
    where = tmp_path_factory.mktemp("telephone")
    turns = simulate(3000, seed=101, profile="telephone-slot-filling")
    write_traces(turns, where / "labeled.jsonl")
    write_traces(turns.with_columns(label=pl.lit(None, pl.String)), where / "unlabeled.jsonl")
    return where


def test_a_stage_that_did_not_run_is_never_the_verdict(telephone):
    records = Pipeline().run(load_traces(telephone / "unlabeled.jsonl")).records
    assert records.height == 3000
    assert not records["failure_point"].is_in(["wake", "er"]).any()
    assert records["probabilities"].struct.field("wake").max() == 0.0


def test_impossible_labels_follow_missing_stages():
    features = pl.DataFrame({f"{s}_missing": [1.0, 0.0] for s in ("wake", "asr", "nlu", "er", "result")})
    mask = impossible(features, ["wake", "asr", "nlu", "er", "result", "correct"])
    assert mask[0].tolist() == [True, True, True, True, True, False] and not mask[1].any()


@pytest.mark.slow
def test_sample_is_deterministic_spread_and_opens_as_a_spreadsheet(telephone, tmp_path):
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for path in paths:
        result = run_cli("sample", telephone / "unlabeled.jsonl", "-n", "60", "--seed", "3", "-o", path)
        assert result.exit_code == 0, result.stderr
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with paths[0].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60 and all(row["label"] == "" for row in rows)
    assert {"turn_id", "text", "previous_text", "next_text", "model_guess", "model_confidence", "why"} <= set(rows[0])
    assert len({row["session_id"] for row in rows}) == 60  # one turn per session while sessions last
    assert len({row["model_guess"] for row in rows}) >= 3  # spread over predicted failure points


def _fill(sheet, labeled, out):
    gold = dict(load_traces(labeled).select("turn_id", "label").iter_rows())
    with sheet.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["label"] = gold[row["turn_id"]]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_label_merge_and_bad_labels(telephone, tmp_path):
    sheet = tmp_path / "sheet.csv"
    run_cli("sample", telephone / "unlabeled.jsonl", "-n", "40", "-o", sheet)
    filled = _fill(sheet, telephone / "labeled.jsonl", tmp_path / "filled.csv")
    out = tmp_path / "merged.jsonl"
    result = run_cli("label", "merge", telephone / "unlabeled.jsonl", filled, "-o", out)
    assert result.exit_code == 0, result.stderr
    merged = load_traces(out)
    assert merged.height == 3000 and merged["label"].drop_nulls().len() == 40
    text = filled.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",asrr"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    result = run_cli("label", "merge", telephone / "unlabeled.jsonl", bad, "-o", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and f"{bad}:4: label: expected one of wake, asr, nlu, er, result, correct" in result.stderr
    assert "got 'asrr'" in result.stderr and not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow
def test_train_on_a_filled_sheet_chooses_and_says_how_well(telephone, tmp_path):
    sheet, model_dir = tmp_path / "sheet.csv", tmp_path / "model"
    sampled = run_cli("sample", telephone / "unlabeled.jsonl", "-n", "120", "-o", sheet)
    assert f"fpi train {telephone / 'unlabeled.jsonl'} --labels {sheet} -o MODEL_DIR" in sampled.stderr
    filled = _fill(sheet, telephone / "labeled.jsonl", tmp_path / "filled.csv")
    result = run_cli("train", telephone / "unlabeled.jsonl", "--labels", filled, "-o", model_dir)
    assert result.exit_code == 0, result.stderr
    assert "learned from 120 gold labels" in result.stderr and "over 5 folds of 120 labels" in result.stderr
    assert " ± " in result.stderr and "chosen over: " in result.stderr  # logs like the shipped model's: both were tried
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["selection"]["method"] in ("scratch", "continue") and set(meta["selection"]["candidates"]) == {"scratch", "continue"}
    assert meta["labels_used"]["turns"] == 120
    report = json.loads(run_cli("eval", telephone / "labeled.jsonl", "--model", model_dir, "--format", "json").stdout)
    assert report["model"]["macro_f1"] > 0.6
    weak = run_cli("train", telephone / "unlabeled.jsonl", "--labels", filled, "--method", "weak", "-o", tmp_path / "weak")
    assert weak.exit_code == 0 and "weak labels" in weak.stderr and "with weak labels from the shipped model" in weak.stderr
    assert json.loads((tmp_path / "weak" / "model.json").read_text())["labels_used"]["turns"] > 120  # gold plus weak


@pytest.mark.slow
def test_training_on_few_labels_is_deterministic_and_keeps_unlabeled_context():
    turns = simulate(1000, seed=5)
    partial = turns.with_columns(label=pl.when(pl.int_range(pl.len()) % 5 == 0).then(pl.col("label")))
    first = train(partial, base=FailurePointModel.load(), seed=2, threads=1)
    again = train(partial, base=FailurePointModel.load(), seed=2, threads=1)
    assert first.model.booster_.model_to_string() == again.model.booster_.model_to_string()
    assert sum(first.gold.values()) == 200 and first.model.training_rows_["valid"] == 0


def test_adapt_refits_the_quantile_tables_and_reports_weak_labels(telephone):
    turns = load_traces(telephone / "unlabeled.jsonl")
    base = FailurePointModel.load()
    adapted = adapt(turns, base=base, seed=0)
    assert adapted.weak is not None and adapted.weak.counts["correct"] > 0 and adapted.weak.counts["wake"] == 0
    assert adapted.model.reference_.tables["asr_confidence"] != base.reference_.tables["asr_confidence"]
    median = np.interp(0.5, adapted.model.reference_.tables["asr_confidence"][1], adapted.model.reference_.tables["asr_confidence"][0])
    assert median < 0.5  # this assistant's ASR scores sit low
    assert adapted.model.best_iteration_ > base.best_iteration_


def test_signals_read_reactions():
    features = pl.DataFrame({"next_text_similarity": [0.9, 0.1, None], "next_gap_s": [5.0, 40.0, None],
                             "next_correction": [0.0, 0.0, None], "barge_in": [0.0, 0.0, 0.0], "explicit_negative": [0.0, 0.0, 0.0],
                             "next_barge_in": [0.0, 0.0, None], "result_status": ["success", "success", "error"]})
    got = signals(features)
    assert got["something_failed"].to_list() == [True, False, True]
    assert got["clean"].to_list() == [False, True, False]


def test_train_without_any_label_points_to_adapt(telephone, tmp_path):
    result = run_cli("train", telephone / "unlabeled.jsonl", "-o", tmp_path / "m")
    assert result.exit_code == 2 and "fpi adapt" in result.stderr


@pytest.mark.slow
def test_training_names_the_labels_it_has_too_few_of(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "traces.jsonl").read_text().splitlines()[:40]]
    for number, row in enumerate(rows):
        row["label"] = "asr" if number == 0 else "correct"
    path = tmp_path / "skewed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_cli("train", path, "-o", tmp_path / "model")
    assert result.exit_code == 2 and "with at least 3 turns each" in result.stderr and "asr 1, correct 39" in result.stderr
    assert not (tmp_path / "model").exists()
    for number, row in enumerate(rows):
        row["label"] = "asr" if number < 10 else "er" if number == 10 else "correct"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_cli("train", path, "-o", tmp_path / "model")  # a rare label is learned as well as it can be, and named
    assert result.exit_code == 0, result.stderr
    assert "too few labeled turns to learn well: er 1 (`fpi sample` finds more)" in result.stderr
