"""The component report: hand-computed numbers on a small set, statistics against known
values, every output format agreeing with the JSON, inputs in every records format and as
raw traces, a self-contained HTML page, and errors that name file and line."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import polars as pl
import pytest

from conftest import run_cli, turn, write_jsonl
from fpi.contract.errors import EXIT_ERROR, EXIT_OK, TraceError
from fpi.io.records_files import read_records, records_batches
from fpi.presentation.report_formats import csv_text, html_page, markdown, percent, rate_cell
from fpi.reports.failure_report import build_report
from fpi.reports.statistics import compare_rates, wilson
from fpi.reports.counts import Tally

# Ten classified turns over two days: wake 1, asr 2, er 1, correct 6; one rule moved an asr turn to correct.
ROWS = [
    ("t0", "wake", "wake", None, "2026-10-01T08:00:00Z", "speaker", None, None, "wake"),
    ("t1", "asr", "asr", None, "2026-10-01T08:01:00Z", "speaker", "music", "play_music", "asr"),
    ("t2", "asr", "asr", None, "2026-10-01T09:00:00Z", "phone", "music", "play_music", "asr"),
    ("t3", "er", "er", None, "2026-10-02T10:00:00Z", "phone", "smart_home", "iot_hue_lightoff", "er"),
    ("t4", "correct", "asr", "asr-recovered-downstream", "2026-10-02T10:05:00Z", "phone", "music", "play_music", "correct"),
    ("t5", "correct", "correct", None, "2026-10-02T11:00:00Z", "speaker", "weather", "weather_query", "correct"),
    ("t6", "correct", "correct", None, "2026-10-02T11:30:00Z", "speaker", "weather", "weather_query", "nlu"),
    ("t7", "correct", "correct", None, "2026-10-02T12:00:00Z", "speaker", "music", "play_music", "correct"),
    ("t8", "correct", "correct", None, "2026-10-02T12:30:00Z", "speaker", "smart_home", "iot_hue_lightoff", "correct"),
    ("t9", "correct", "correct", None, "2026-10-02T13:00:00Z", "tv", "weather", "weather_query", "correct"),
]


def records() -> pl.DataFrame:
    columns = ["turn_id", "failure_point", "model_failure_point", "rule", "timestamp", "device_type", "domain", "intent", "label"]
    frame = pl.DataFrame([dict(zip(columns, row, strict=True)) for row in ROWS], schema={c: pl.String for c in columns})
    return frame.with_columns(session_id=pl.col("turn_id"), locale=pl.lit("en-US"))


def test_wilson_and_two_proportion_test_match_known_values():
    low, high = wilson(2, 10)
    assert (round(float(low), 4), round(float(high), 4)) == (0.0567, 0.5098)
    low, high = wilson(0, 50)
    assert float(low) == 0.0 and round(float(high), 4) == 0.0713  # z²/(n+z²)
    change = compare_rates(30, 1000, 20, 1000, alpha=0.05)
    assert change["change"] == 0.01 and change["z"] == 1.4322 and round(change["p_value"], 4) == 0.1521
    assert not change["significant"] and change["verdict"] == "no significant change"
    assert change["change_ci_low"] < 0 < change["change_ci_high"]
    worse = compare_rates(60, 1000, 20, 1000, alpha=0.05)
    assert worse["significant"] and worse["verdict"] == "worse" and worse["change_ci_low"] > 0


def test_component_table_by_hand():
    report = build_report(records(), source="ten")
    rows = {r["failure_point"]: r for r in report["components"]}
    assert report["turns"] == 10
    assert rows["asr"]["turns"] == 2 and rows["asr"]["rate"] == 0.2
    assert (rows["asr"]["ci_low"], rows["asr"]["ci_high"]) == (0.056682, 0.509838)
    assert rows["asr"]["share_of_defects"] == 0.5 and rows["wake"]["share_of_defects"] == 0.25
    assert rows["correct"]["share_of_defects"] is None
    assert report["overall"]["turns"] == 4 and report["overall"]["rate"] == 0.4
    assert rows["asr"]["top_intents"] == [{"value": "play_music", "turns": 2}]
    assert rows["correct"]["top_domains"][0] == {"value": "weather", "turns": 3}
    assert rows["wake"]["top_domains"] == []  # no NLU on a false wake: nothing to list
    assert rows["correct"]["rules_in"] == [{"rule": "asr-recovered-downstream", "turns": 1}]
    assert rows["asr"]["rules_out"] == [{"rule": "asr-recovered-downstream", "turns": 1}]
    assert report["confusion"]["turns"] == 10 and report["confusion"]["matrix"][2][5] == 1  # gold nlu called correct


def test_slices_flag_small_cells_and_keep_them():
    report = build_report(records(), by=["device.type", "day"], min_cell=3)
    devices = {v["value"]: v for v in report["slices"][0]["values"]}
    assert [v["value"] for v in report["slices"][0]["values"]] == ["speaker", "phone", "tv"]  # most turns first
    assert devices["tv"]["turns"] == 1 and devices["tv"]["small"] and not devices["speaker"]["small"]
    assert devices["phone"]["rates"]["asr"]["count"] == 1 and devices["phone"]["rates"]["asr"]["rate"] == round(1 / 3, 6)
    assert devices["phone"]["rates"]["defects"]["count"] == 2
    days = report["slices"][1]["values"]
    assert [d["value"] for d in days] == ["2026-10-01", "2026-10-02"] and [d["turns"] for d in days] == [3, 7]
    assert days[0]["rates"]["defects"]["rate"] == 1.0
    assert report["by_day"] == report["slices"][1]
    with pytest.raises(Exception, match="--by colour: not a field"):
        build_report(records(), by=["colour"])


def test_baseline_comparison():
    before = records().with_columns(failure_point=pl.lit("correct"))
    report = build_report(records(), baseline=before, baseline_source="last")
    rows = {r["failure_point"]: r for r in report["baseline"]["components"]}
    assert rows["asr"]["rate"] == 0.2 and rows["asr"]["baseline_rate"] == 0.0 and rows["asr"]["change"] == 0.2
    assert report["baseline"]["overall"]["change"] == 0.4 and report["baseline"]["overall"]["significant"]
    assert report["baseline"]["overall"]["verdict"] == "worse"


def test_every_format_agrees_with_the_json(tmp_path):
    report = build_report(records(), source="ten", by=["device.type"], baseline=records(), baseline_source="same", min_cell=3)
    text = markdown(report)
    page = html_page(report)
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))
    for row in report["components"]:
        cell = rate_cell(row)
        assert re.search(rf"\| {row['failure_point']} \| {row['turns']} \| {re.escape(cell)} \|", text)
        assert f"<td>{row['failure_point']}</td><td class=\"num\">{row['turns']}</td><td class=\"num\">{cell}</td>" in page
        line = next(r for r in rows if r["table"] == "components" and r["failure_point"] == row["failure_point"])
        assert (float(line["rate"]), float(line["ci_low"]), float(line["ci_high"])) == (row["rate"], row["ci_low"], row["ci_high"])
    for value in report["slices"][0]["values"]:
        for name, cell in value["rates"].items():
            line = next(r for r in rows if r["table"] == "slice" and r["value"] == value["value"] and r["failure_point"] == name)
            assert float(line["rate"]) == cell["rate"] and int(line["count"]) == cell["count"]
            assert line["small"] == str(value["small"])
            assert rate_cell(cell) in text and rate_cell(cell) in page
    overall = report["baseline"]["overall"]
    assert f"| all defects | {percent(overall['rate'])} | {percent(overall['baseline_rate'])} | +0.00" in text
    confusion = [r for r in rows if r["table"] == "confusion"]
    assert sum(int(r["count"]) for r in confusion) == 10


@pytest.mark.slow
def test_html_is_one_self_contained_deterministic_page():
    report = build_report(records(), by=["device.type", "day"], baseline=records(), min_cell=3)
    page = html_page(report)
    assert page == html_page(report)
    assert page.count("<svg") == 4  # components, device heat-map, the by-day lines, confusion
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page and "url(http" not in page
    assert "<figcaption" in page and "Predicted vs gold" in page


@pytest.fixture(scope="module")
def classified(tmp_path_factory, fixture_traces):
    folder = tmp_path_factory.mktemp("classified")
    for name in ("r.jsonl", "r.csv", "r.parquet"):
        assert run_cli("classify", fixture_traces, "--explain", "-o", folder / name).exit_code == 0
    return folder


def test_report_reads_jsonl_csv_parquet_and_raw_traces_alike(classified, fixture_traces):
    reports = []
    for source in (classified / "r.jsonl", classified / "r.csv", classified / "r.parquet", fixture_traces):
        result = run_cli("report", source, "--by", "nlu.intent", "--format", "json")
        assert result.exit_code == EXIT_OK, result.stderr
        report = json.loads(result.stdout)
        report.pop("source")
        assert len(report["about"].pop("input_sha256")) == 64  # of each file: the rest of the header is the same
        for row in report["components"]:
            if source == fixture_traces:
                row.pop("top_reasons")  # raw traces are classified without --explain
        reports.append(report)
    assert reports[0] == reports[1] == reports[2]
    assert {k: v for k, v in reports[0].items() if k != "components"} == {k: v for k, v in reports[3].items() if k != "components"}
    asr = next(r for r in reports[0]["components"] if r["failure_point"] == "asr")
    assert asr["top_reasons"] and asr["top_reasons"][0]["turns"] <= asr["turns"]


@pytest.mark.slow
def test_report_cli_writes_each_format(classified, tmp_path):
    for fmt, suffix in (("html", "html"), ("markdown", "md"), ("csv", "csv"), ("json", "json")):
        out = tmp_path / f"report.{suffix}"
        result = run_cli("report", classified / "r.jsonl", "--by", "day", "--baseline", classified / "r.parquet",
                         "--format", fmt, "-o", out)
        assert result.exit_code == EXIT_OK and out.stat().st_size > 0, result.stderr
    table = run_cli("report", classified / "r.jsonl", "--by-component")
    assert table.exit_code == EXIT_OK and "all defects" in table.stdout and "Predicted vs gold" in table.stdout


def test_report_errors_name_file_and_line(tmp_path, classified):
    bad = tmp_path / "bad.jsonl"
    lines = (classified / "r.jsonl").read_text().splitlines()[:5]
    record = json.loads(lines[3])
    record["failure_point"] = "speech"
    lines[3] = json.dumps(record)
    bad.write_text("\n".join(lines) + "\n")
    result = run_cli("report", bad)
    assert result.exit_code == EXIT_ERROR and "bad.jsonl:4: failure_point: expected one of" in result.stderr
    unknown = run_cli("report", classified / "r.jsonl", "--by", "colour")
    assert unknown.exit_code == EXIT_ERROR and "--by colour: not a field" in unknown.stderr
    mixed = run_cli("report", classified / "r.jsonl", "--no-rules")
    assert mixed.exit_code == EXIT_ERROR and "already classified" in mixed.stderr
    traces = write_jsonl(tmp_path / "t.jsonl", [turn(), turn(turn_id="t2", turn_index=1, asr={"text": 3})])
    broken = run_cli("report", traces)
    assert broken.exit_code == EXIT_ERROR and "t.jsonl:2" in broken.stderr


@pytest.mark.slow
def test_by_component_selects_the_component_view(fixture_traces, tmp_path):
    records = tmp_path / "r.jsonl"
    assert run_cli("classify", fixture_traces, "-o", records).exit_code == 0
    plain = run_cli("report", records)
    sliced = run_cli("report", records, "--by", "domain")
    both = run_cli("report", records, "--by", "domain", "--by-component")
    assert "Failure points of 2000 turns" in plain.stdout and "By domain" not in plain.stdout
    assert "Failure points of 2000 turns" not in sliced.stdout and "By domain" in sliced.stdout
    assert "Failure points of 2000 turns" in both.stdout and "By domain" in both.stdout
    markdown_sliced = run_cli("report", records, "--by", "domain", "--format", "markdown").stdout
    assert "## Failure points" not in markdown_sliced and "## By domain" in markdown_sliced
    # machine formats carry every number whatever the view
    assert '"components"' in run_cli("report", records, "--by", "domain", "--format", "json").stdout


def test_terminal_report_fits_100_columns_without_splitting_identifiers(classified, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    result = run_cli("report", classified / "r.jsonl", "--by-component", "--by", "nlu.intent", "--by", "device.type")
    assert result.exit_code == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    words = set(re.findall(r"[A-Za-z0-9_.-]+", result.stdout))
    records = read_records(classified / "r.jsonl")
    reasons = records["explanation"].struct.field("features").list.eval(pl.element().struct.field("feature")).explode()
    identifiers = {*records["intent"].drop_nulls(), *records["device_type"].drop_nulls(),
                   *(name for name in reasons.drop_nulls() if name in result.stdout)}
    assert "er_value_similarity_min" in identifiers  # a long one
    assert identifiers <= words, f"split across lines: {sorted(identifiers - words)}"
    assert re.search(r"\n\s+\d+\.\d-\d+\.\d ", result.stdout)  # slices: each rate's interval on the line under it
    monkeypatch.setenv("COLUMNS", "250")
    wide = run_cli("report", classified / "r.jsonl", "--by-component").stdout
    assert "top intents" in wide and "behind it" not in wide  # a wide terminal keeps one line per failure point


def test_header_is_deterministic_and_names_model_rules_input_and_days(classified, tmp_path):
    first = run_cli("report", classified / "r.jsonl", "--format", "markdown").stdout
    assert first == run_cli("report", classified / "r.jsonl", "--format", "markdown").stdout
    records = read_records(classified / "r.jsonl")
    digest = hashlib.sha256((classified / "r.jsonl").read_bytes()).hexdigest()
    assert f"model {records['model_sha'][0]}; rules {records['rules_sha'][0]}" in first
    assert f"sha256 {digest[:16]}" in first and "turns of 2026-10-01 to" in first
    assert "report date 2026-10-05" in run_cli("report", classified / "r.jsonl", "--format", "markdown", "--date", "2026-10-05").stdout
    assert "expected a day as YYYY-MM-DD" in run_cli("report", classified / "r.jsonl", "--date", "yesterday").stderr
    mixed = pl.concat([records, records.with_columns(model_sha=pl.lit("0123456789ab"), turn_id=pl.col("turn_id") + "x")])
    mixed.write_parquet(tmp_path / "mixed.parquet")
    about = json.loads(run_cli("report", tmp_path / "mixed.parquet", "--format", "json").stdout)["about"]
    assert about["models"] == sorted({"0123456789ab", records["model_sha"][0]})


@pytest.mark.slow
def test_baseline_verdict_names_components_that_got_worse_or_better():
    now = records()
    before = now.with_columns(failure_point=pl.lit("correct"))  # the baseline had no defects at all
    report = build_report(pl.concat([now] * 30), baseline=pl.concat([before] * 30), baseline_source="last")
    assert report["baseline"]["verdict"] == {"worse": ["wake", "asr", "er"], "better": [], "unchanged": ["nlu", "result"],
                                             "all_defects": "worse"}
    flipped = build_report(pl.concat([before] * 30), baseline=pl.concat([now] * 30), baseline_source="last")
    assert flipped["baseline"]["verdict"]["better"] == ["wake", "asr", "er"]
    assert "**Against last: better: wake -10.00 pp" in markdown(flipped)
    assert 'class="verdict worse"' in html_page(report) and "Against last: worse: wake +10.00 pp" in html_page(report)


@pytest.mark.slow
def test_output_format_follows_the_extension_of_o(classified, tmp_path):
    for suffix, starts in ((".html", "<!DOCTYPE html>"), (".json", "{"), (".md", "# fpi report"), (".csv", "table,")):
        out = tmp_path / f"report{suffix}"
        assert run_cli("report", classified / "r.jsonl", "-o", out).exit_code == EXIT_OK
        assert out.read_text(encoding="utf-8").startswith(starts)
    unknown = run_cli("report", classified / "r.jsonl", "-o", tmp_path / "report.txt")
    assert unknown.exit_code == EXIT_ERROR and "cannot tell the format from '.txt'" in unknown.stderr
    clash = run_cli("report", classified / "r.jsonl", "--format", "json", "-o", tmp_path / "r.html")
    assert clash.exit_code == EXIT_ERROR and "says html but --format says json" in clash.stderr
    assert not (tmp_path / "report.txt").exists() and not (tmp_path / "r.html").exists()


def test_baseline_given_as_raw_traces_is_classified_with_the_same_reader(classified, fixture_traces):
    result = run_cli("report", classified / "r.jsonl", "--baseline", fixture_traces, "--format", "json")
    assert result.exit_code == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["baseline"]["verdict"]["all_defects"] == "no significant change"


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv", "r.parquet"])
def test_a_file_tallied_in_small_batches_reports_as_the_records_in_memory(classified, name):
    """Reports read a tally (`fpi.reports.counts`), so a file of any size is read batch by batch; the numbers
    are those of the whole records, explanations' mean contributions included."""
    by = ["nlu.intent", "device.type", "day", "session_id"]
    whole = build_report(read_records(classified / name), by=by, baseline=read_records(classified / "r.jsonl"))
    batches = Tally.of_file(classified / name, by, rows=150)
    assert len(list(records_batches(classified / name, 150))) > 5
    assert build_report(batches, by=by, baseline=Tally.of_file(classified / "r.jsonl", rows=150)) == whole
    assert whole["components"][1]["top_reasons"] and whole["confusion"]["turns"] == 2000
    at_once = Tally.of(read_records(classified / name), by).canonical()
    assert batches.canonical().counts.equals(at_once.counts) and batches.canonical().reasons.equals(at_once.reasons)


def test_a_bad_record_deep_in_a_large_file_is_named_by_its_line(classified, tmp_path):
    lines = (classified / "r.jsonl").read_text().splitlines()
    lines[1500] = lines[1500].replace('"failure_point":"', '"failure_point":"x', 1)
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    result = run_cli("report", tmp_path / "bad.jsonl")
    assert result.exit_code == EXIT_ERROR
    assert f"{tmp_path / 'bad.jsonl'}:1501: failure_point: expected one of wake, asr, nlu, er, result, correct, got 'x" in result.stderr
    with pytest.raises(TraceError, match=r"bad.jsonl:1501: failure_point"):
        Tally.of_file(tmp_path / "bad.jsonl", rows=100)
