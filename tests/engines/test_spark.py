"""The Spark engine gives the local engine's records: a real local Spark session (Java 17, pyspark 4)."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import FIXTURES, run_cli
from fpi import classify
from fpi.contract.errors import TraceError

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow


def test_spark_gives_the_local_engines_records(spark, tmp_path):
    from fpi.engines import spark as engine

    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()
    shuffled = tmp_path / "interleaved.jsonl"
    shuffled.write_text("\n".join(lines[::2] + lines[1::2]) + "\n")  # sessions interleaved across the file
    records = engine.classify(spark.read.text(str(shuffled)), partitions=3, source=str(shuffled))
    got = pl.DataFrame(records.toArrow()).sort(engine.LINE)
    local = classify(shuffled)
    assert got[engine.LINE].to_list() == list(range(1, len(lines) + 1))
    assert got.drop(engine.LINE).select(local.columns).equals(local)
    alone = engine.classify(spark.read.text(str(shuffled)), no_rules=True, source=str(shuffled))
    assert pl.DataFrame(alone.toArrow()).sort(engine.LINE)["rule"].null_count() == len(lines)
    explained = engine.classify(spark.read.text(str(shuffled)), partitions=3, source=str(shuffled), explain_top_k=2)
    got = pl.DataFrame(explained.toArrow()).sort(engine.LINE).drop(engine.LINE)
    local = classify(shuffled, explain_top_k=2)
    assert got.columns == local.columns and got.equals(local)
    assert got["explanation"].null_count() == (local["failure_point"] == "correct").sum() > 0


def test_lines_are_numbered_in_file_order_across_input_partitions(spark, tmp_path):
    """Spark numbers the lines as it reads them, in one pass: the records and a bad line carry their line in the
    file however many splits it is read in."""
    from fpi.engines import spark as engine

    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()
    path = tmp_path / "split.jsonl"
    path.write_text("\n".join([*lines[:1500], '{"turn_id": "broken",', *lines[1500:]]) + "\n")
    rejected: list = []
    spark.conf.set("spark.sql.files.maxPartitionBytes", "100000")  # the file in some 20 splits
    try:
        text = spark.read.text(str(path))
        assert text.rdd.getNumPartitions() > 5
        records = engine.classify(text, source=str(path), on_error="skip", on_rejected=rejected.extend)
        got = pl.DataFrame(records.toArrow()).sort(engine.LINE)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert [(r.line, r.raw) for r in rejected] == [(1501, '{"turn_id": "broken",')]
    assert got[engine.LINE].to_list() == [*range(1, 1501), *range(1502, len(lines) + 2)]
    local = classify(FIXTURES / "traces.jsonl")
    assert got.drop(engine.LINE).select(local.columns).equals(local)


def test_spark_names_bad_records_by_their_input_line(spark, tmp_path):
    """A bad line, and a turn used again in its own session (its turn_id; another's place): named by input line, the
    line of the first use too, as locally (a task reads its partition's lines numbered in their own order)."""
    import json

    from fpi.engines import spark as engine
    from fpi.io.traces import read_traces

    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()[:200]
    same_place = json.dumps({**json.loads(lines[20]), "turn_id": "another"})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*lines[:120], '{"turn_id": "broken",', *lines[120:], lines[9], same_place]) + "\n")
    with pytest.raises(TraceError) as refused:
        engine.classify(spark.read.text(str(path)), partitions=3, source=str(path))
    assert refused.value.problems == read_traces(path).problems()
    assert [problem.split(": ")[0] for problem in refused.value.problems] == [f"{path}:{n}" for n in (121, 202, 203)]
    assert "first used on line 10" in refused.value.problems[1] and "first used on line 21" in refused.value.problems[2]


def test_a_turn_id_reused_in_another_session_is_named_as_locally(spark, tmp_path):
    """Each task sees one session: the driver names a turn_id used in two sessions, with the local message,
    and with `skip` leaves the later use out as the local engine does."""
    import json

    from fpi.engines import spark as engine
    from fpi.io.traces import read_traces
    from fpi.pipeline.classify import Pipeline

    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()[:300]
    first, other = json.loads(lines[3]), json.loads(lines[250])
    assert first["session_id"] != other["session_id"]
    lines[250] = json.dumps({**other, "turn_id": first["turn_id"]})
    path = tmp_path / "reused.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = read_traces(path)
    assert loaded.problems() == [f"{path}:251: turn_id: duplicate turn_id {first['turn_id']!r}: expected a unique id, "
                                 "first used on line 4"]
    with pytest.raises(TraceError) as refused:
        engine.classify(spark.read.text(str(path)), partitions=3, source=str(path))
    assert refused.value.problems == loaded.problems()
    kept = engine.classify(spark.read.text(str(path)), partitions=3, source=str(path), on_error="skip")
    got = pl.DataFrame(kept.toArrow()).sort(engine.LINE)
    local = Pipeline().run(loaded.turns).records
    assert 251 not in got[engine.LINE] and got.height == 299
    assert got.drop(engine.LINE).select(local.columns).equals(local)


def test_cli_engine_spark_writes_the_same_records_as_a_parquet_folder(spark, tmp_path):
    local, folder = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    assert run_cli("classify", FIXTURES / "traces.jsonl", "-o", local).exit_code == 0
    result = run_cli("classify", FIXTURES / "traces.jsonl", "--engine", "spark", "-o", folder)
    assert result.exit_code == 0, result.stderr
    assert "2000 records written" in result.stderr and folder.is_dir()
    assert pl.read_parquet(folder / "*.parquet").equals(pl.read_parquet(local))
    refused = run_cli("classify", FIXTURES / "traces.jsonl", "--engine", "spark", "-o", tmp_path / "x.jsonl")
    assert refused.exit_code == 2 and "give -o NAME.parquet" in refused.stderr


def test_cli_engine_spark_skips_and_quarantines_bad_records_as_locally(spark, tmp_path):
    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()[:300]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*lines[:40], '{"turn_id": "broken",', *lines[40:100], '{"turn_id": 7}', *lines[100:]]) + "\n")
    local_out, spark_out = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    local = run_cli("classify", path, "--on-error", "skip", "--quarantine", tmp_path / "local.quarantine.jsonl",
                    "--explain", "-o", local_out)
    assert local.exit_code == 3, local.stderr
    refused = run_cli("classify", path, "--engine", "spark", "-o", spark_out)
    assert refused.exit_code != 0 and f"{path}:41: malformed JSON" in refused.stderr and not spark_out.exists()
    result = run_cli("classify", path, "--engine", "spark", "--on-error", "skip", "--explain", "-o", spark_out)
    assert result.exit_code == 3, result.stderr
    assert f"{path}:41: malformed JSON" in result.stderr and f"read 302, accepted 300, quarantined 2 turns" in result.stderr
    assert (tmp_path / "bad.jsonl.quarantine.jsonl").read_bytes() == (tmp_path / "local.quarantine.jsonl").read_bytes()
    assert pl.read_parquet(spark_out / "*.parquet").equals(pl.read_parquet(local_out))


MAPPING = """\
stages: [asr, nlu, result]
order: ts
fields:
  session_id: call.id
  asr.text: stt.text
  asr.confidence: {from: stt.score, scale: [0, 100]}
  nlu.intent: intent
  nlu.confidence: intent_confidence
  result.status: {from: status, values: {ok: success, failed: error, no_match: fallback}}
  timestamp: {from: ts, time: unix_ms}
"""


def test_cli_engine_spark_reads_logs_of_another_shape_through_a_mapping(spark, tmp_path):
    from fpi import simulate

    turns = simulate(600, seed=4, profile="telephone-slot-filling").sort("timestamp")  # sessions interleaved
    asr, nlu, result = pl.col("asr").struct, pl.col("nlu").struct, pl.col("result").struct
    logs = turns.select(
        call=pl.struct(id="session_id"), stt=pl.struct(text=asr.field("text"), score=(asr.field("confidence") * 100).round(2)),
        intent=nlu.field("intent"), intent_confidence=nlu.field("confidence"),
        status=result.field("status").replace({"success": "ok", "error": "failed", "fallback": "no_match"}),
        ts=pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC").dt.epoch("ms"))
    lines = logs.write_ndjson().splitlines()
    path, mapping = tmp_path / "calls.jsonl", tmp_path / "calls.yaml"
    path.write_text("\n".join([*lines[:50], '{"call": {"id": "x"}, "stt": {"score": "loud"}}', *lines[50:]]) + "\n")
    mapping.write_text(MAPPING)
    local_out, spark_out = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    local = run_cli("classify", path, "--mapping", mapping, "--on-error", "skip", "--quarantine", tmp_path / "q.jsonl",
                    "-o", local_out)
    assert local.exit_code == 3, local.stderr
    result = run_cli("classify", path, "--mapping", mapping, "--on-error", "skip", "--engine", "spark", "-o", spark_out)
    assert result.exit_code == 3, result.stderr
    assert f"{path}:51: asr.confidence" in result.stderr and "expected a number" in result.stderr
    assert (tmp_path / "calls.jsonl.quarantine.jsonl").read_bytes() == (tmp_path / "q.jsonl").read_bytes()
    got, want = pl.read_parquet(spark_out / "*.parquet"), pl.read_parquet(local_out)
    assert got.height == 600 and got.equals(want)

    computed = tmp_path / "computed.yaml"  # a session Spark cannot key lines by: the readers read the input on the driver
    computed.write_text(MAPPING.replace("session_id: call.id", "session_id: {first_of: [call.id, call.sid]}"))
    assert run_cli("classify", path, "--mapping", computed, "--on-error", "skip", "--engine", "spark", "-o",
                   tmp_path / "computed.parquet").exit_code == 3
    assert pl.read_parquet(tmp_path / "computed.parquet" / "*.parquet").equals(want)


def test_spark_replaces_an_earlier_output_file_or_folder_and_nothing_else(spark, tmp_path):
    source = tmp_path / "traces.jsonl"
    source.write_text("".join((FIXTURES / "traces.jsonl").read_text().splitlines(keepends=True)[:200]))
    out = tmp_path / "out.parquet"
    out.write_text("an older file of that name")
    assert run_cli("classify", source, "--engine", "spark", "-o", out).exit_code == 0
    assert out.is_dir() and run_cli("classify", source, "--engine", "spark", "-o", out).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "traces.jsonl"]
    (out / "notes.txt").write_text("mine")
    result = run_cli("classify", source, "--engine", "spark", "-o", out)
    assert result.exit_code == 2 and "holds files Spark did not write (notes.txt)" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("offer", ["its share", "too few"])
def test_each_task_offers_its_share_of_the_sample_and_the_driver_gets_the_whole_inputs(spark, monkeypatch, offer):
    from pyspark.sql import functions as F

    from fpi import Pipeline, load_traces
    from fpi.engines import spark as engine
    from fpi.pipeline.quantiles import TURN_HASH

    monkeypatch.setattr(engine, "SAMPLE_TURNS", 500)  # a sample of 500 (and 50 to spare) among 2,000 turns
    monkeypatch.setattr(engine, "SAMPLE_SLACK", 50)
    offers = []
    share = engine._offer
    monkeypatch.setattr(engine, "_offer", lambda parts: offers.append(parts) or (share(parts) if offer == "its share" or parts == 1 else 5))
    lines = spark.read.text(str(FIXTURES / "traces.jsonl")).coalesce(1)
    numbered = lines.select("value", F.monotonically_increasing_id().alias(engine._AT)).repartition(8)  # 250 lines each
    found = engine._Job(Pipeline(), "traces.jsonl", None)._inspected(numbered)
    sample = found.filter(pl.col("turn_id").is_not_null())
    turns = load_traces(FIXTURES / "traces.jsonl")
    assert int(found[engine._TURNS].sum()) == turns.height == 2000
    if offer == "its share":  # 551 * 1.5 / 8 + 100 = 204 of each task's 250, not the 2,000: asked once
        assert offers == [8] and sample.height == 8 * share(8) == 8 * 204
    else:  # 5 of each cannot hold the 551 smallest: the tasks are asked again, for 551 each (all of their 250)
        assert offers == [8, 1] and sample.height == turns.height
    expected = turns.with_columns(_hash=TURN_HASH).sort("_hash", "turn_id", "line").head(551)
    got = sample.with_columns(_hash=TURN_HASH).sort("_hash", "turn_id", engine._AT).head(551)
    assert got["turn_id"].to_list() == expected["turn_id"].to_list()
    assert (got[engine._AT] + 1).to_list() == expected["line"].cast(pl.Int64).to_list()
    assert engine._ORDER not in found.columns and engine._CUT not in found.columns


def test_a_local_master_tries_a_failed_task_again_as_a_cluster_does():
    from fpi.engines.spark import TASK_TRIES, tried_again

    assert tried_again("local[2]") == f"local[2,{TASK_TRIES}]"
    assert tried_again("local[*]") == f"local[*,{TASK_TRIES}]"
    assert tried_again("local") == f"local[1,{TASK_TRIES}]"
    assert tried_again("local[2,8]") == "local[2,8]"  # the user's own count stands
    assert tried_again("spark://host:7077") == "spark://host:7077"
