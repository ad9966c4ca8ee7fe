import json

import polars as pl
import pytest

from fpi import FailurePointModel, classify, load_traces
from conftest import run_cli, turn, write_jsonl


def test_classify_fixture_with_no_flags_gives_one_record_per_turn(fixture_traces):
    result = run_cli("classify", fixture_traces)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    turns = load_traces(fixture_traces)
    assert [r["turn_id"] for r in records] == turns["turn_id"].to_list()
    first = records[0]
    assert list(first) == ["turn_id", "session_id", "turn_index", "failure_point", "model_failure_point",
                           "confidence", "probabilities", "rule", "rules_matched", "recovered_from",
                           "timestamp", "locale", "device_type", "domain", "intent", "label", "model_sha", "rules_sha",
                           "shift"]
    assert 0 <= first["shift"] < 0.25  # the fixtures are simulated: like the model's training data
    assert abs(sum(first["probabilities"].values()) - 1) < 1e-4
    assert first["confidence"] == max(first["probabilities"].values())
    assert "failure points of 2000 turns" in result.stderr


def test_classify_is_byte_for_byte_deterministic(fixture_traces, tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        assert run_cli("classify", fixture_traces, "-o", tmp_path / name).exit_code == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.slow
def test_classify_writes_csv_and_parquet(fixture_traces, tmp_path):
    assert run_cli("classify", fixture_traces, "-o", tmp_path / "r.csv").exit_code == 0
    assert run_cli("classify", fixture_traces, "-o", tmp_path / "r.parquet").exit_code == 0
    csv = pl.read_csv(tmp_path / "r.csv")
    parquet = pl.read_parquet(tmp_path / "r.parquet")
    assert csv.height == parquet.height == 2000
    assert "p_asr" in csv.columns and (csv["failure_point"] == parquet["failure_point"]).all()
    assert run_cli("classify", fixture_traces, "-o", tmp_path / "r.xlsx").exit_code == 2


def test_bad_input_fails_with_exit_2_and_writes_nothing(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [turn(), turn(turn_id="t2", turn_index=1, asr={"text": 3})])
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", path, "-o", out)
    assert result.exit_code == 2
    assert "t.jsonl:2: asr.text: expected a string, got a number 3" in result.stderr
    assert not out.exists()


def test_skip_keeps_every_turn_accounted_for(tmp_path):
    rows = [turn(turn_id=f"t{i}", turn_index=i) for i in range(5)] + [turn(turn_id="bad", turn_index=9, label="?")]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", path, "-o", out, "--on-error", "skip")
    assert result.exit_code == 3
    quarantined = (tmp_path / "t.jsonl.quarantine.jsonl").read_text().splitlines()
    assert len(out.read_text().splitlines()) + len(quarantined) == len(rows)


def test_missing_model_directory_is_exit_2(fixture_traces, tmp_path):
    result = run_cli("classify", fixture_traces, "--model", tmp_path)
    assert result.exit_code == 2 and "not a model directory" in result.stderr


@pytest.mark.slow
def test_train_then_eval_with_the_trained_model(tmp_path):
    data = tmp_path / "train.jsonl"
    assert run_cli("simulate", "-n", "1500", "--seed", "3", "-o", data).exit_code == 0
    result = run_cli("train", data, "-o", tmp_path / "model", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert "macro-F1" in result.stderr and "over 5 folds of 1500 labels" in result.stderr
    assert (tmp_path / "model" / "booster.txt").exists()
    result = run_cli("eval", data, "--model", tmp_path / "model", "--format", "json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["model"]["turns"] == 1500 and 0.3 < report["model"]["macro_f1"] <= 1


@pytest.mark.slow
def test_eval_against_the_annotator(tmp_path):
    data = tmp_path / "held_out.jsonl"
    assert run_cli("simulate", "-n", "3000", "--seed", "77", "--annotator-noise", "0.1", "-o", data).exit_code == 0
    report = json.loads(run_cli("eval", data, "--human", "human_label", "--format", "json").stdout)
    expected = round(100 * report["model"]["macro_f1"] / report["human"]["macro_f1"], 2)
    assert report["model_pct_of_human_macro_f1"] == expected
    table = run_cli("eval", data, "--human", "human_label")
    assert table.exit_code == 0 and "% of human performance" in table.stdout
    assert run_cli("eval", data, "--human", "no_such_field").exit_code == 2


def test_eval_without_labels_is_a_usage_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [turn()])
    result = run_cli("eval", path)
    assert result.exit_code == 2 and "none of the 1 turns has a `label`" in result.stderr and "fpi sample" in result.stderr


@pytest.mark.slow
def test_eval_scores_the_labeled_turns_of_merged_traces(fixture_traces, tmp_path):
    """`fpi label merge` writes every turn, a few labeled: eval scores those and says how many; labels with no
    support and no prediction show `-`, not a score."""
    rows = [json.loads(line) for line in fixture_traces.read_text().splitlines()]
    kept = {"correct": 0, "asr": 0}
    for row in rows:  # gold labels on 30 correct and 10 asr turns only
        label = row.pop("label")
        if label in kept and kept[label] < (30 if label == "correct" else 10):
            kept[label] += 1
            row["label"] = label
    merged = write_jsonl(tmp_path / "merged.jsonl", rows)
    result = run_cli("eval", merged)
    assert result.exit_code == 0, result.stderr
    assert "scored the 40 turns with a gold label; the other 1960 of 2000 have none" in result.stderr
    assert "40 turns: accuracy" in result.stdout
    wake = next(line for line in result.stdout.splitlines() if line.strip("│┃ ").startswith("wake"))
    assert [cell.strip() for cell in wake.strip("│").split("│")][1:] == ["-", "-", "-", "0"]
    scores = json.loads(run_cli("eval", merged, "--format", "json").stdout)
    assert scores["model"]["turns"] == 40 and scores["model"]["per_label"]["asr"]["support"] == 10


def test_library_and_cli_agree(fixture_traces, tmp_path):
    out = tmp_path / "r.jsonl"
    run_cli("classify", fixture_traces, "-o", out)
    records = classify(load_traces(fixture_traces), FailurePointModel.load())
    assert pl.read_ndjson(out)["failure_point"].to_list() == records["failure_point"].to_list()


def test_simulate_rejects_bad_error_rates(tmp_path):
    result = run_cli("simulate", "-n", "10", "--error-rate", "tts=0.1", "-o", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "unknown stage 'tts'" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_version_is_the_distributions():
    from importlib import metadata

    import fpi
    from fpi.contract.distribution import DISTRIBUTION

    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"fpi {metadata.version(DISTRIBUTION)} ({DISTRIBUTION})\n"
    assert fpi.__version__ == metadata.version("fpi-voice")


@pytest.mark.slow
def test_simulate_writes_the_format_its_name_says(tmp_path):
    import gzip

    assert run_cli("simulate", "-n", "50", "--seed", "3", "-o", tmp_path / "t.jsonl.gz").exit_code == 0
    assert run_cli("simulate", "-n", "50", "--seed", "3", "-o", tmp_path / "t.jsonl").exit_code == 0
    assert gzip.decompress((tmp_path / "t.jsonl.gz").read_bytes()) == (tmp_path / "t.jsonl").read_bytes()
    refused = run_cli("simulate", "-n", "50", "-o", tmp_path / "t.csv")
    assert refused.exit_code == 2 and ".jsonl, .jsonl.gz, .parquet" in refused.stderr and not (tmp_path / "t.csv").exists()
    stage = run_cli("simulate", "-n", "50", "--form", "stage", "-o", tmp_path / "t.parquet")
    assert stage.exit_code == 2 and "JSON Lines only" in stage.stderr


def test_options_that_need_another_say_so(fixture_traces, tmp_path):
    top_k = run_cli("classify", fixture_traces, "--top-k", "5", "-o", tmp_path / "out.jsonl")
    assert top_k.exit_code == 2 and "--top-k goes with --explain" in top_k.stderr
    quarantine = run_cli("validate", fixture_traces, "--quarantine", tmp_path / "q.jsonl")
    assert quarantine.exit_code == 2 and "--quarantine goes with --on-error skip" in quarantine.stderr
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "q.jsonl").exists()


@pytest.mark.slow
def test_eval_draws_the_confusion_matrix_deterministically(tmp_path, fixture_traces):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    assert run_cli("eval", fixture_traces, "-o", first).exit_code == 0
    assert run_cli("eval", fixture_traces, "-o", second).exit_code == 0
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first.read_bytes() == second.read_bytes()
    svg = tmp_path / "c.svg"
    assert run_cli("eval", fixture_traces, "-o", svg).exit_code == 0 and "<svg" in svg.read_text()
    wrong = run_cli("eval", fixture_traces, "-o", tmp_path / "c.txt")
    assert wrong.exit_code == 2 and "drawn as .png or .svg" in wrong.stderr and not (tmp_path / "c.txt").exists()
