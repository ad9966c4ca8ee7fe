"""Assistant profiles: stages that do not exist, calibrations, vocabularies, random assistants."""

import numpy as np
import polars as pl
import pytest

from conftest import run_cli
from fpi import simulate
from fpi.simulation.profiles import PROFILES, Calibration, draw_profile


def test_default_profile_is_the_original_simulator():
    assert simulate(500, seed=8).equals(simulate(500, seed=8, profile="default"))


def test_a_stage_that_does_not_exist_is_never_logged_nor_the_label():
    turns = simulate(4000, seed=2, profile="telephone-slot-filling")
    assert turns["wake"].null_count() == turns["er"].null_count() == turns.height
    assert set(turns["label"].unique()) <= {"asr", "nlu", "result", "correct"}
    assert turns["nlu"].struct.field("intent").str.starts_with("phon_").all()


def test_calibration_moves_scores_and_keeps_their_order():
    rng = np.random.default_rng(0)
    scores = np.linspace(0.05, 0.95, 19)
    low = Calibration(power=4.0).apply(scores, rng)
    assert (np.diff(low) > 0).all() and low[10] < 0.3 < scores[10]
    squashed = Calibration(low=0.5, high=1.0).apply(scores, rng)
    assert squashed.min() >= 0.5 and Calibration().apply(scores, rng) is scores


def test_low_scale_profile_puts_many_right_turns_under_a_third():
    turns = simulate(4000, seed=3, profile="telephone-slot-filling").filter(pl.col("label") == "correct")
    assert (turns["asr"].struct.field("confidence") < 0.3).mean() > 0.3


def test_random_profiles_differ_per_batch_and_keep_ids_unique():
    turns = simulate(3000, seed=5, profile="random", batch_turns=1000)
    assert turns["assistant"].n_unique() == 3 and turns["turn_id"].n_unique() == 3000
    assert turns.equals(simulate(3000, seed=5, profile="random", batch_turns=1000))
    drawn = [draw_profile(np.random.default_rng(i), f"r{i}") for i in range(20)]
    assert {p.wake for p in drawn} == {True, False} and {p.er for p in drawn} == {True, False}
    assert len({p.asr_calibration for p in drawn}) == 20


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_gives_valid_traces(name, tmp_path):
    out = tmp_path / "t.jsonl"
    result = run_cli("simulate", "-n", "400", "--seed", "1", "--profile", name, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert run_cli("validate", out).exit_code == 0


def test_unknown_profile_is_a_usage_error(tmp_path):
    result = run_cli("simulate", "-n", "10", "--profile", "nope", "-o", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "unknown profile" in result.stderr and not (tmp_path / "x.jsonl").exists()
