import io

import polars as pl
import pytest

from fpi import LABELS, read_traces, simulate
from fpi.simulation.utterance_bank import load_bank
from conftest import run_cli


@pytest.fixture(scope="module")
def sim() -> pl.DataFrame:
    return simulate(100_000, seed=21, annotator_noise=0.1)


@pytest.mark.slow
def test_simulate_100k_is_valid_and_has_every_label(sim):
    buffer = io.BytesIO()
    sim.write_ndjson(buffer)
    result = read_traces(buffer.getvalue(), name="sim.jsonl")
    assert result.read == 100_000 and not result.rejected
    counts = dict(sim["label"].value_counts().iter_rows())
    assert set(counts) == set(LABELS)
    assert 0.65 < counts["correct"] / sim.height < 0.9
    assert all(counts[label] > 500 for label in LABELS)


def test_same_seed_same_bytes_other_seed_other_traces(tmp_path):
    a, b, c = (tmp_path / f"{n}.jsonl" for n in "abc")
    for path, seed in ((a, 4), (b, 4), (c, 5)):
        assert run_cli("simulate", "-n", "500", "--seed", seed, "-o", path).exit_code == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_sessions_are_ordered_and_timestamps_increase_within_sessions(sim):
    ordered = sim.with_columns(ts=pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ")).sort("session_id", "turn_index")
    check = ordered.group_by("session_id").agg(
        first=pl.col("turn_index").min(), n=pl.len(), last=pl.col("turn_index").max(),
        increasing=(pl.col("ts").diff().drop_nulls() > pl.duration(seconds=0)).all())
    assert (check["first"] == 0).all() and (check["last"] == check["n"] - 1).all() and check["increasing"].all()
    assert check["n"].max() <= 8


def test_users_rephrase_after_failures_more_than_after_success(sim):
    nxt = sim.sort("session_id", "turn_index").with_columns(
        next_text=pl.col("asr").struct.field("text").shift(-1).over("session_id"),
        same=(pl.col("asr").struct.field("text").shift(-1).over("session_id") == pl.col("asr").struct.field("text")))
    rate = nxt.group_by(failed=pl.col("label").is_in(["asr", "nlu", "er", "result"])).agg(pl.col("same").fill_null(False).mean())
    rates = dict(rate.iter_rows())
    assert rates[True] > 3 * rates[False]


def test_false_wakes_have_little_speech_and_weak_verification(sim):
    words = pl.col("asr").struct.field("text").str.count_matches(r"\S+")
    stats = sim.group_by(wake=pl.col("label") == "wake").agg(
        words=words.mean(), unverified=(pl.col("wake").struct.field("verified") == False).mean())  # noqa: E712
    by = {row[0]: row for row in stats.iter_rows()}
    assert by[True][1] < 2 < by[False][1]
    assert by[True][2] > 0.4 > 0.1 > by[False][2]


def test_unsupported_requests_with_every_stage_right_are_correct(sim):
    unsupported = sim.filter(pl.col("nlu").struct.field("intent") == "out_of_domain")
    ran_right = unsupported.filter(pl.col("result").struct.field("status") == "unsupported")
    assert ran_right.height > 100
    assert (ran_right["label"] == "correct").mean() > 0.95


def test_confidences_overlap_between_right_and_failed_asr(sim):
    conf = pl.col("asr").struct.field("confidence")
    by = dict(sim.group_by(pl.col("label") == "asr").agg(conf.quantile(0.9)).iter_rows())
    low = dict(sim.group_by(pl.col("label") == "asr").agg(conf.quantile(0.1)).iter_rows())
    assert low[False] < by[True]  # the distributions overlap


def test_annotator_disagrees_at_about_the_asked_rate_and_more_on_recovered_turns(sim):
    disagree = (sim["label"] != sim["human_label"]).mean()
    assert 0.08 < disagree < 0.12


def test_error_rates_change_the_mix():
    base = simulate(20_000, seed=1)
    noisy = simulate(20_000, seed=1, error_rates={"asr": 0.4})
    share = lambda f: (f["label"] == "asr").mean()  # noqa: E731
    assert share(noisy) > 2 * share(base)
    with pytest.raises(ValueError, match="unknown stage"):
        simulate(10, error_rates={"tts": 0.1})


def test_bank_keeps_slurp_credit_and_licence():
    credit = load_bank().credit
    assert "SLURP" in credit and "CC BY 4.0" in credit
