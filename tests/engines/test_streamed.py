"""The streamed engine: any input in bounded memory, batch by batch of whole sessions, with the same
records, byte for byte, as the in-memory run, and the same account of bad records."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
from conftest import ROOT, run_cli

from fpi import simulate
from fpi.io.traces import read_traces, turns_fingerprint
from fpi.pipeline.quantiles import SAMPLE_TURNS, Reference
from fpi.pipeline.classify import Pipeline
from fpi.simulation.simulator import write_traces
from fpi.io.line_blocks import line_blocks
from fpi.engines import streamed
from fpi.engines.plan import Plan, Reading, sink_for
from fpi.engines.streamed import SESSION_HASH, _arrow, _sample_again, _Shelf
from fpi.io.quarantine import OnError


def classify_file(path, pipeline, output=None, *, batch_turns=200_000, on_error="fail", labels_required=False):
    """The streamed engine on a file: records into `output`, or (None) only counted and fingerprinted."""
    reading = Reading(on_error=OnError(on_error), labels_required=labels_required)
    sinks = [sink_for(output)] if output is not None else []
    return streamed.run(Plan(str(path), pipeline, reading, sinks, batch_turns, fingerprint=output is None))


@pytest.fixture(scope="module")
def interleaved(tmp_path_factory):
    """Sessions interleaved as in real logs (turns in time order), in three forms."""
    folder = tmp_path_factory.mktemp("stream")
    turns = simulate(12_000, seed=17, profile="random", batch_turns=3000).sort("timestamp")
    write_traces(turns, folder / "traces.jsonl")
    write_traces(turns, folder / "traces.jsonl.gz")
    write_traces(turns, folder / "traces.parquet")
    return folder


@pytest.mark.parametrize(("name", "suffix"), [
    pytest.param(name, suffix, marks=() if (name, suffix) == ("traces.jsonl", ".jsonl") else pytest.mark.slow)
    for name in ("traces.jsonl", "traces.jsonl.gz", "traces.parquet") for suffix in (".jsonl", ".csv", ".parquet")])
def test_streamed_records_are_the_in_memory_records_byte_for_byte(interleaved, tmp_path, name, suffix):
    source = interleaved / name
    whole, streamed = tmp_path / f"whole{suffix}", tmp_path / f"streamed{suffix}"
    assert run_cli("classify", source, "-o", whole, "--batch-turns", "100000").exit_code == 0
    result = run_cli("classify", source, "-o", streamed, "--batch-turns", "2000")
    assert result.exit_code == 0 and "12000 records written" in result.stderr
    assert streamed.read_bytes() == whole.read_bytes()


def test_a_streamed_run_computes_each_turns_features_once(interleaved, tmp_path, monkeypatch):
    """The partitions' features, computed when the run hears its sample, are kept for their classification."""
    from fpi.pipeline import classify as pipeline_module, features

    planned = []
    plan = features.feature_plan
    monkeypatch.setattr(features, "feature_plan", lambda turns, *rest: planned.append(turns.height) or plan(turns, *rest))
    monkeypatch.setattr(pipeline_module, "build_features", lambda *_, **__: pytest.fail("features computed again"))
    output = tmp_path / "streamed.jsonl"
    result = classify_file(interleaved / "traces.jsonl", Pipeline(), output, batch_turns=2000)
    assert result.classified == sum(planned) == 12_000 and len(planned) > 5


@pytest.mark.parametrize("sample", [SAMPLE_TURNS, 5000])
def test_a_streamed_run_predicts_each_turn_once(interleaved, tmp_path, monkeypatch, sample):
    """The sampled turns' scores, predicted when the run hears them, are reused by their partitions, whether
    the sample is the whole input or a part of it; the records stay the in-memory run's."""
    from fpi.engines import whole_input
    from fpi.pipeline import quantiles
    from fpi.pipeline.model import FailurePointModel

    monkeypatch.setattr(quantiles, "SAMPLE_TURNS", sample)
    monkeypatch.setattr(whole_input, "SAMPLE_TURNS", sample)
    predicted = []
    raw_scores = FailurePointModel.raw_scores
    monkeypatch.setattr(FailurePointModel, "raw_scores",
                        lambda self, X, rows=None: predicted.append(len(X) if rows is None else len(rows)) or raw_scores(self, X, rows))
    result = classify_file(interleaved / "traces.jsonl", Pipeline(), tmp_path / "streamed.jsonl", batch_turns=2000)
    assert result.classified == sum(predicted) == 12_000
    assert predicted[0] == min(sample, 12_000)  # the sample, heard; then each partition's turns not in it
    assert len(predicted) == 1 if sample >= 12_000 else len(predicted) > 2
    in_memory = Pipeline().run(read_traces(interleaved / "traces.jsonl").turns).records
    assert (tmp_path / "streamed.jsonl").read_text() == in_memory.write_ndjson()


@pytest.mark.slow
def test_explanations_stream_alike(interleaved, tmp_path):
    pipeline = Pipeline(explain_top_k=2)
    whole = pipeline.run(read_traces(interleaved / "traces.jsonl").turns).records
    classify_file(interleaved / "traces.jsonl", pipeline, tmp_path / "s.jsonl", batch_turns=3000)
    assert (tmp_path / "s.jsonl").read_text() == whole.write_ndjson()


@pytest.mark.slow
def test_bad_records_are_named_and_quarantined_as_in_memory(interleaved, tmp_path):
    lines = (interleaved / "traces.jsonl").read_text().splitlines()
    early = json.loads(lines[10])
    late_duplicate = json.dumps({**early, "turn_index": 999})  # its turn_id was used 9,000 lines earlier
    broken = lines[:5000] + ['{"turn_id": "x",'] + lines[5000:9000] + [late_duplicate] + lines[9000:]
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(broken) + "\n")
    for batch, out in (("100000", "whole"), ("2000", "streamed")):
        refused = run_cli("classify", source, "-o", tmp_path / f"{out}.jsonl", "--batch-turns", batch)
        assert refused.exit_code == 2 and not (tmp_path / f"{out}.jsonl").exists()
        assert f"{source}:5001: malformed JSON" in refused.stderr
        assert f"{source}:9002: turn_id: duplicate turn_id {early['turn_id']!r}: expected a unique id, first used on line 11" \
               in refused.stderr
        skipped = run_cli("classify", source, "-o", tmp_path / f"{out}.jsonl", "--batch-turns", batch,
                          "--on-error", "skip", "--quarantine", tmp_path / f"{out}-q.jsonl")
        assert skipped.exit_code == 3 and "read 12002, accepted 12000, quarantined 2" in skipped.stderr
    assert (tmp_path / "streamed.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert (tmp_path / "streamed-q.jsonl").read_bytes() == (tmp_path / "whole-q.jsonl").read_bytes()


@pytest.mark.parametrize("slack", [50, pytest.param(0, marks=pytest.mark.slow)])
@pytest.mark.slow
def test_duplicates_across_chunks_and_the_sample_match_the_in_memory_run(interleaved, tmp_path, monkeypatch, slack):
    """Small chunks, so duplicates lie in other chunks than their first use, and a small sample that one
    duplicate falls into: with slack the sample drops it, without slack it is gathered again."""
    import fpi.engines.streamed
    import fpi.engines.whole_input
    import fpi.pipeline.quantiles
    monkeypatch.setattr(fpi.engines.streamed, "CHUNK_BYTES", 300_000)
    monkeypatch.setattr(fpi.engines.whole_input, "SAMPLE_SLACK", slack)
    monkeypatch.setattr(fpi.engines.whole_input, "SAMPLE_TURNS", 3000)
    monkeypatch.setattr(fpi.pipeline.quantiles, "SAMPLE_TURNS", 3000)
    gathered_again = []
    monkeypatch.setattr(fpi.engines.streamed, "_sample_again", lambda *a: gathered_again.append(1) or _sample_again(*a))
    lines = (interleaved / "traces.jsonl").read_text().splitlines()
    early, place = json.loads(lines[10]), json.loads(lines[20])
    candidates = pl.Series([f"dup-{i}" for i in range(500)])
    first_in_sample = candidates[int(candidates.hash(seed=0).arg_min())]  # a turn_id sure to be sampled
    reused_place = json.dumps({**place, "turn_id": first_in_sample})
    reused_id = json.dumps({**early, "turn_index": 999})
    source = tmp_path / "dups.jsonl"
    source.write_text("\n".join(lines[:6000] + [reused_place] + lines[6000:11000] + [reused_id] + lines[11000:]) + "\n")
    loaded = read_traces(source)
    expected = Pipeline().run(loaded.turns).records.write_ndjson()
    result = classify_file(source, Pipeline(), tmp_path / "s.jsonl", on_error="skip", batch_turns=2000)
    assert (tmp_path / "s.jsonl").read_text() == expected
    assert result.problems() == loaded.problems() == [
        f"{source}:6001: turn_index: duplicate turn_index {place['turn_index']} in session {place['session_id']!r}: "
        "expected one turn per index, first used on line 21",
        f"{source}:11002: turn_id: duplicate turn_id {early['turn_id']!r}: expected a unique id, first used on line 11"]
    assert [r.raw for r in result.rejected] == [reused_place, reused_id]
    assert len(gathered_again) == (slack == 0)
    measured_only = classify_file(source, Pipeline(), None, on_error="skip", batch_turns=2000)
    assert measured_only.fingerprint == turns_fingerprint(loaded.turns) and measured_only.counts == result.counts


@pytest.mark.slow
def test_records_to_stdout_stream_too(interleaved):
    whole = run_cli("classify", interleaved / "traces.jsonl", "--batch-turns", "100000")
    streamed = run_cli("classify", interleaved / "traces.jsonl", "--batch-turns", "2000")
    assert streamed.exit_code == 0 and streamed.stdout == whole.stdout


def test_quantile_tables_rest_on_a_sample_chosen_by_turn_id_alone():
    rows = pl.DataFrame({"turn_id": [f"t{i}" for i in range(SAMPLE_TURNS + 500)]})
    sample = Reference.sample(rows)
    assert sample.height == SAMPLE_TURNS
    assert Reference.sample(rows.reverse())["turn_id"].sort().equals(sample["turn_id"].sort())
    small = rows.head(10)
    assert Reference.sample(small).equals(small)


@pytest.mark.slow
def test_an_interrupted_run_leaves_no_spill_and_the_old_output(interleaved, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("previous records\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "fpi", "classify", str(interleaved / "traces.jsonl"), "-o", str(out),
                                "--batch-turns", "1000"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith("fpi-spill-") for p in tmp_path.iterdir()):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode != 0
    assert out.read_text() == "previous records\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("fpi-spill-", ".out.jsonl."))]


def test_a_large_file_of_other_field_names_is_refused_as_in_memory(tmp_path):
    rows = "".join(json.dumps({"turn_id": f"t{i}", "session_id": f"s{i // 3}", "turn_index": i % 3, "asr_text": "on",
                               "intent": "lights_on", "status": "ok"}) + "\n" for i in range(3000))
    source = tmp_path / "logs.jsonl"
    source.write_text(rows)
    whole = run_cli("classify", source, "-o", tmp_path / "a.jsonl")
    streamed = run_cli("classify", source, "-o", tmp_path / "b.jsonl", "--batch-turns", "1000")
    assert whole.exit_code == streamed.exit_code == 2
    assert whole.stderr == streamed.stderr and "asr_text, intent, status" in streamed.stderr
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()


@pytest.mark.slow
def test_eval_and_gate_stream_a_large_file_to_the_same_numbers(interleaved, tmp_path, monkeypatch):
    """eval and gate read an input larger than a batch batch by batch: the same metrics file (data
    fingerprint included), scores and verdicts as in memory; a partly labeled file is scored on its
    labeled turns, saying how many, the same way in both."""
    import fpi.engines.choice
    source = interleaved / "traces.jsonl"
    policy = ROOT / "fixtures" / "gate" / "policy.yaml"
    runs = {}
    for engine, batch in (("memory", 100_000), ("streamed", 2000)):
        monkeypatch.setattr(fpi.engines.choice, "BATCH_TURNS", batch)
        scores = run_cli("eval", source, "--format", "json", "--save-metrics", tmp_path / f"{engine}.json")
        gate = run_cli("gate", source, "--policy", policy, "--baseline", ROOT / "fixtures" / "gate" / "baseline.json",
                       "--format", "json")
        assert scores.exit_code == 0, scores.stderr
        assert gate.exit_code in (0, 1), gate.stderr
        runs[engine] = (scores.stdout, (tmp_path / f"{engine}.json").read_text(), gate.stdout, gate.exit_code)
    assert runs["streamed"] == runs["memory"]
    assert json.loads(runs["memory"][1])["metrics"]["turns"] == 12000
    lines = source.read_text().splitlines()
    unlabeled = [json.dumps({k: v for k, v in json.loads(line).items() if k != "label"}) for line in lines[:3]]
    (tmp_path / "some-unlabeled.jsonl").write_text("\n".join(unlabeled + lines[3:]) + "\n")
    partial = {}
    for engine, batch in (("memory", 100_000), ("streamed", 2000)):
        monkeypatch.setattr(fpi.engines.choice, "BATCH_TURNS", batch)
        partial[engine] = run_cli("eval", tmp_path / "some-unlabeled.jsonl", "--format", "json")
        assert partial[engine].exit_code == 0, partial[engine].stderr
        assert "scored the 11997 turns with a gold label; the other 3 of 12000 have none" in partial[engine].stderr
    assert partial["streamed"].stdout == partial["memory"].stdout != runs["memory"][0]


@pytest.mark.slow
def test_report_on_a_large_trace_file_classifies_it_batch_by_batch_to_the_same_report(interleaved, monkeypatch):
    import fpi.engines.choice
    reports = []
    for batch in (100_000, 2000):
        monkeypatch.setattr(fpi.engines.choice, "BATCH_TURNS", batch)
        result = run_cli("report", interleaved / "traces.jsonl", "--by", "nlu.intent", "--format", "json")
        assert result.exit_code == 0, result.stderr
        reports.append(result.stdout)
    assert reports[1] == reports[0] and json.loads(reports[0])["turns"] == 12000


@pytest.mark.parametrize("damage", ["garbled", pytest.param("truncated", marks=pytest.mark.slow)])
@pytest.mark.slow
def test_a_damaged_gzip_file_is_a_clear_error_streamed_or_not(interleaved, tmp_path, damage):
    data = (interleaved / "traces.jsonl.gz").read_bytes()
    middle = len(data) // 2
    damaged = data[:middle] + bytes(200) + data[middle + 200:] if damage == "garbled" else data[:middle]
    source = tmp_path / "damaged.jsonl.gz"
    source.write_bytes(damaged)
    head = tmp_path / "head.jsonl.gz"  # damaged before the first block of lines
    head.write_bytes(data[:10] + bytes(50) + data[60:])
    for path in (source, head):
        for batch in ("2000", "100000"):
            result = run_cli("classify", path, "-o", tmp_path / "out.jsonl", "--batch-turns", batch)
            assert result.exit_code == 2 and f"{path}: not a readable gzip file" in result.stderr, result.stderr
            assert not (tmp_path / "out.jsonl").exists()
        assert run_cli("eval", path).exit_code == 2 and run_cli("report", path).exit_code == 2


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """Sessions whole, one after another, as a logger that writes a session at its end would."""
    folder = tmp_path_factory.mktemp("grouped")
    turns = simulate(6_000, seed=23, profile="random", batch_turns=3000).sort("session_id", "turn_index")
    write_traces(turns, folder / "traces.jsonl")
    return folder / "traces.jsonl"


def _batches(pipeline: Pipeline) -> list[int]:
    """Records the size of each batch the pipeline is handed."""
    sizes: list[int] = []
    run = pipeline.run
    pipeline.run = lambda turns, **kw: sizes.append(turns.height) or run(turns, **kw)  # type: ignore[method-assign]
    return sizes


@pytest.mark.slow
def test_sessions_that_come_whole_are_classified_chunk_by_chunk_without_a_shuffle(grouped, tmp_path):
    expected = Pipeline().run(read_traces(grouped).turns).records.write_ndjson()
    pipeline = Pipeline()
    sizes = _batches(pipeline)
    result = classify_file(grouped, pipeline, tmp_path / "s.jsonl", batch_turns=1000)
    assert result.contiguous and len(sizes) > 3 and sum(sizes) == 6000
    assert (tmp_path / "s.jsonl").read_text() == expected


@pytest.mark.parametrize("where", ["second chunk", "last line"])
@pytest.mark.slow
def test_a_session_met_again_after_it_ended_sends_the_run_back_to_the_shuffle(grouped, tmp_path, where):
    lines = grouped.read_text().splitlines()
    later = 1500 if where == "second chunk" else len(lines) - 1
    moved = lines[:3] + lines[4:later] + [lines[3]] + lines[later:]  # the first session's fourth turn, far later
    source = tmp_path / "late.jsonl"
    source.write_text("\n".join(moved) + "\n")
    expected = Pipeline().run(read_traces(source).turns).records.write_ndjson()
    result = classify_file(source, Pipeline(), tmp_path / "s.jsonl", batch_turns=1000)
    assert not result.contiguous
    assert (tmp_path / "s.jsonl").read_text() == expected


@pytest.mark.slow
def test_a_session_longer_than_a_chunk_stays_whole(tmp_path):
    turns = simulate(3_000, seed=5).with_columns(session_id=pl.lit("one long session"),
                                                  turn_index=pl.int_range(pl.len(), dtype=pl.Int64))
    write_traces(turns, tmp_path / "long.jsonl")
    pipeline = Pipeline()
    sizes = _batches(pipeline)
    result = classify_file(tmp_path / "long.jsonl", pipeline, tmp_path / "s.jsonl", batch_turns=500)
    assert result.contiguous and sizes == [3000]
    assert (tmp_path / "s.jsonl").read_text() == Pipeline().run(read_traces(tmp_path / "long.jsonl").turns).records.write_ndjson()


@pytest.mark.slow
def test_duplicates_in_sessions_that_come_whole_are_named_as_in_memory(grouped, tmp_path):
    lines = grouped.read_text().splitlines()
    again = json.loads(lines[2500])
    copy = json.dumps({**again, "turn_id": "another id"})  # the same session and turn_index, on the next line
    source = tmp_path / "dups.jsonl"
    source.write_text("\n".join(lines[:2501] + [copy] + lines[2501:]) + "\n")
    loaded = read_traces(source)
    result = classify_file(source, Pipeline(), tmp_path / "s.jsonl", on_error="skip", batch_turns=1000)
    assert result.contiguous and result.problems() == loaded.problems() and len(loaded.problems()) == 1
    assert (tmp_path / "s.jsonl").read_text() == Pipeline().run(loaded.turns).records.write_ndjson()


@pytest.mark.parametrize("packed", [False, True])
def test_line_blocks_keep_lines_whole_and_numbered(tmp_path, packed):
    lines = [b"short", b"x" * 50, b"", b"", b"", b"   ", b"tail", b"", b""]
    text = b"\n".join(lines)  # no newline at the end
    path = tmp_path / ("t.jsonl.gz" if packed else "t.jsonl")
    path.write_bytes(gzip.compress(text) if packed else text)
    blocks = list(line_blocks(path, 8))
    assert b"".join(block for _, block in blocks).strip() == text.strip()
    assert all(block.endswith(b"\n") for _, block in blocks[:-1])
    numbered = [(first + k, line) for first, block in blocks for k, line in enumerate(block.split(b"\n")[:-1] or [block])]
    assert (1, b"short") in numbered and (2, b"x" * 50) in numbered and (7, b"tail") in numbered
    assert not any(block.isspace() for _, block in blocks)  # blocks of blank lines only are left out


@pytest.mark.slow
def test_a_parquet_duplicate_chunks_apart_is_quarantined_as_in_memory(interleaved, tmp_path):
    turns = pl.read_parquet(interleaved / "traces.parquet")
    source = tmp_path / "dups.parquet"
    pl.concat([turns, turns[10].with_columns(turn_index=pl.lit(999, turns.schema["turn_index"]))]).write_parquet(source)
    loaded = read_traces(source)
    result = classify_file(source, Pipeline(), tmp_path / "s.jsonl", on_error="skip", batch_turns=2000)
    assert [(r.line, r.problems, r.raw) for r in result.rejected] == [(r.line, r.problems, r.raw) for r in loaded.rejected]
    assert [r.line for r in loaded.rejected] == [12_001] and json.loads(loaded.rejected[0].raw)["turn_index"] == 999


def test_scoring_a_stream_with_every_record_rejected_says_so(tmp_path):
    from fpi.contract.errors import UsageError

    source = tmp_path / "all-bad.jsonl"
    source.write_text('{"turn_id": 1}\nnull\n')
    with pytest.raises(UsageError, match="no turns to score: none of the 2 records read was accepted"):
        classify_file(source, Pipeline(), None, on_error="skip", labels_required=True)
    result = classify_file(source, Pipeline(), tmp_path / "out.jsonl", on_error="skip")
    assert (result.read, result.classified, [r.line for r in result.rejected]) == (2, 0, [1, 2])


def test_spilled_turns_share_files_of_a_fixed_size_however_many_partitions(tmp_path):
    """Ten chunks among 40 partitions go to files of about the budget's size, each holding every partition's
    share (not a file per chunk and partition); a partition reads back as its rows came, written or waiting."""
    turns = read_traces(_written(simulate(3000, seed=5), tmp_path / "t.jsonl")).turns.drop("raw")
    shelf = _Shelf(tmp_path, "turns", budget=_arrow(turns).nbytes // 3)
    for start in range(0, 3000, 300):
        shelf.split(turns.slice(start, 300), SESSION_HASH, 40)
    assert (len(shelf.files), bool(shelf.waiting)) in ((2, True), (3, True), (3, False))  # Arrow's sizes vary with chunking
    for part in shelf.parts:
        expected = turns.filter((SESSION_HASH % 40).cast(pl.UInt32) == part)
        assert shelf.read(part).equals(expected)
        assert shelf.read(part, ["line", "turn_id"]).equals(expected.select("line", "turn_id"))
    shelf.flush()
    assert len(shelf.files) in (3, 4) and not shelf.waiting and len(shelf.parts) == 40


def test_records_merge_back_in_order_across_many_small_batches_and_spill_files(interleaved, tmp_path, monkeypatch):
    """Spill files, record batches and merge windows far smaller than the partitions, so windows end inside
    batches and batches inside windows: the records are still the in-memory ones, byte for byte."""
    monkeypatch.setattr(streamed, "CHUNK_BYTES", 300_000)
    monkeypatch.setattr(streamed, "SPILL_BYTES", 1 << 20)
    monkeypatch.setattr(streamed, "MERGE_BYTES", 1)
    monkeypatch.setattr(streamed, "MIN_MERGE_ROWS", 70)
    monkeypatch.setattr(streamed, "MERGE_WINDOW", 333)
    expected = Pipeline().run(read_traces(interleaved / "traces.jsonl").turns).records.write_ndjson()
    result = classify_file(interleaved / "traces.jsonl", Pipeline(), tmp_path / "s.jsonl", batch_turns=2000)
    assert not result.contiguous and (tmp_path / "s.jsonl").read_text() == expected


def _written(turns: pl.DataFrame, path):
    write_traces(turns, path)
    return path
