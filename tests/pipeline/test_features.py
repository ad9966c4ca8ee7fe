import math

import polars as pl
import pytest
from rapidfuzz import fuzz

from fpi import FEATURE_NAMES, build_features, load_traces, simulate
from fpi.pipeline.features import FEATURES, features_markdown
from conftest import ROOT, turn, write_jsonl


def _asr(text, confidence, *alternatives):
    nbest = [{"text": text, "confidence": confidence}] + [{"text": t, "confidence": c} for t, c in alternatives]
    return {"text": text, "confidence": confidence, "nbest": nbest}


@pytest.fixture()
def hand_made(tmp_path):
    rows = [
        # second turn of s1 comes first in the file: dialogue features must follow turn_index
        turn(turn_id="b", session_id="s1", turn_index=1, timestamp="2026-10-01T09:00:04.500Z",
             asr=_asr("turn on the kitchen light", 0.95),
             nlu={"domain": "smart_home", "intent": "light_on", "confidence": 0.9, "slots": []},
             result={"status": "success", "action": "light_on", "response": "Okay.", "latency_ms": 300}),
        turn(turn_id="a", session_id="s1", turn_index=0, timestamp="2026-10-01T09:00:00Z",
             wake={"detected": True, "score": 0.8, "verified": True},
             asr=_asr("turn on the kitchen lamp", 0.9, ("turn on the kitchen light", 0.6), ("turn on a kitchen lamp", 0.2)),
             nlu={"domain": "smart_home", "intent": "light_on", "confidence": 0.7,
                  "slots": [{"name": "device", "value": "kitchen lamp", "confidence": 0.5},
                            {"name": "room", "value": "garage", "confidence": 0.9}],
                  "nbest": [{"intent": "light_on", "confidence": 0.7}, {"intent": "light_off", "confidence": 0.25}]},
             er={"entities": [
                 {"slot": "device", "value": "kitchen lamp", "resolved_id": "d1", "resolved_value": "kitchen light", "score": 0.6, "status": "resolved"},
                 {"slot": "room", "value": "garage", "resolved_id": None, "resolved_value": None, "score": 0.1, "status": "unresolved"}]},
             result={"status": "error", "action": None, "response": "Sorry.", "latency_ms": 900},
             feedback={"barge_in": True, "explicit": "negative"}),
        turn(turn_id="c", session_id="s2", turn_index=0),
    ]
    return build_features(load_traces(write_jsonl(tmp_path / "t.jsonl", rows)))


def _row(features, turn_id):
    return features.filter(pl.col("turn_id") == turn_id).row(0, named=True)


def test_output_is_in_input_order_with_every_feature(hand_made):
    assert hand_made["turn_id"].to_list() == ["b", "a", "c"]
    every = [f.name for f in FEATURES] + [name for name in FEATURE_NAMES if name not in {f.name for f in FEATURES}]
    assert hand_made.columns == ["turn_id", *every]
    assert every == list(FEATURE_NAMES)  # a model trained here may read every one


def test_per_stage_features(hand_made):
    a = _row(hand_made, "a")
    assert a["wake_missing"] == 0 and a["wake_score"] == 0.8 and a["wake_verified"] == 1
    assert a["asr_nbest_size"] == 3 and math.isclose(a["asr_nbest_margin"], 0.3)
    assert a["asr_word_count"] == 5 and a["asr_text_empty"] == 0
    assert math.isclose(a["nlu_nbest_margin"], 0.45) and a["nlu_slot_count"] == 2 and a["nlu_slot_min_confidence"] == 0.5
    assert (a["nlu_domain"], a["nlu_intent"]) == ("smart_home", "light_on")
    assert (a["er_entity_count"], a["er_resolved_count"], a["er_unresolved_count"], a["er_ambiguous_count"]) == (2, 1, 1, 0)
    assert a["er_min_score"] == 0.1
    assert (a["result_status"], a["result_latency_ms"], a["result_has_action"]) == ("error", 900, 0)
    assert (a["barge_in"], a["explicit_negative"], a["explicit_positive"]) == (1, 1, 0)


def test_cross_stage_features(hand_made):
    a = _row(hand_made, "a")
    assert a["slots_in_asr_text"] == 0.5  # "kitchen lamp" is in the text, "garage" is not
    assert math.isclose(a["er_value_similarity_min"], fuzz.ratio("kitchen lamp", "kitchen light") / 100, rel_tol=1e-6)
    assert a["er_resolved_in_asr_text"] == 0 and a["asr_alt_matches_entity"] == 1
    assert math.isclose(a["asr_alt_similarity"], fuzz.ratio("turn on the kitchen lamp", "turn on the kitchen light") / 100, rel_tol=1e-6)


def test_nbest_spread_and_slot_values_across_hypotheses(hand_made):
    a, b = _row(hand_made, "a"), _row(hand_made, "b")
    assert math.isclose(a["asr_nbest_mass"], 1.7) and a["asr_nbest_distinct"] == 3
    entropy = -sum(p * math.log(p) for p in (0.9, 0.6, 0.2))
    assert math.isclose(a["asr_nbest_entropy"], entropy, rel_tol=1e-9)
    assert math.isclose(a["nlu_nbest_entropy"], -(0.7 * math.log(0.7) + 0.25 * math.log(0.25)), rel_tol=1e-9)
    assert (a["nlu_runner_up_intent"], a["nlu_runner_up_confidence"]) == ("light_off", 0.25)
    # "kitchen lamp" is in the hypotheses weighted 0.9 and 0.2 of 1.7; "garage" in none: the weakest value counts
    assert a["slots_in_asr_nbest"] == 0.0
    assert (b["asr_nbest_distinct"], b["nlu_runner_up_intent"], b["slots_in_asr_nbest"]) == (1, None, None)


def test_actions_and_what_the_next_turn_says(hand_made):
    a, b = _row(hand_made, "a"), _row(hand_made, "b")
    assert (a["result_action"], b["result_action"]) == (None, "light_on")
    assert (a["next_result_action"], a["prev_result_action"], b["prev_result_action"]) == ("light_on", None, None)
    assert (a["next_intent"], a["next_nlu_confidence"], b["prev_asr_confidence"], b["next_intent"]) == ("light_on", 0.9, 0.9, None)
    assert (a["next_slot_overlap"], b["next_slot_overlap"]) == (0.0, None)  # b names no slots again; b has none


def test_a_slot_value_said_again_and_heard_by_some_hypotheses(tmp_path):
    rows = [turn(turn_id=f"t{k}", session_id="s", turn_index=k, asr=_asr(text, 0.6, *alternatives),
                 nlu={"domain": "d", "intent": "find", "confidence": 0.8, "slots": [{"name": "food", "value": value}]})
            for k, (text, alternatives, value) in enumerate([
                ("thai food", [("tie food", 0.3), ("thai foot", 0.1)], "Thai"),
                ("thai food please", [], "thai")])]
    first = build_features(load_traces(write_jsonl(tmp_path / "t.jsonl", rows))).row(0, named=True)
    assert math.isclose(first["slots_in_asr_nbest"], 0.7 / 1.0) and first["next_slot_overlap"] == 1.0


def test_dialogue_features_follow_turn_index_not_file_order(hand_made):
    a, b = _row(hand_made, "a"), _row(hand_made, "b")
    assert a["position_in_session"] == 0 and b["position_in_session"] == 1 and a["session_length"] == 2
    assert math.isclose(a["next_text_similarity"], fuzz.ratio("turn on the kitchen lamp", "turn on the kitchen light") / 100, rel_tol=1e-6)
    assert a["next_gap_s"] == 4.5 and b["prev_gap_s"] == 4.5 and b["next_gap_s"] is None
    assert a["next_same_intent"] == 1 and a["next_result_status"] == "success" and a["next_asr_confidence"] == 0.95
    assert a["prev_text_similarity"] is None and a["same_intent_in_session"] == 1


def test_positions_and_rephrases_across_interleaved_sessions_with_gaps(tmp_path):
    texts = {"x5": "turn off the fan", "y0": "play jazz", "x0": "turn on the fan", "x2": "turn the fan on", "y3": "play some jazz"}
    rows = [turn(turn_id=key, session_id=key[0], turn_index=int(key[1:]), asr=_asr(text, 0.9)) for key, text in texts.items()]
    features = build_features(load_traces(write_jsonl(tmp_path / "t.jsonl", rows)))
    by_turn = {r["turn_id"]: r for r in features.iter_rows(named=True)}
    assert {k: by_turn[k]["position_in_session"] for k in texts} == {"x5": 2, "y0": 0, "x0": 0, "x2": 1, "y3": 1}
    assert by_turn["x2"]["prev_text_similarity"] == by_turn["x0"]["next_text_similarity"]
    assert math.isclose(by_turn["x2"]["next_text_similarity"], fuzz.ratio("turn the fan on", "turn off the fan") / 100, rel_tol=1e-6)
    assert math.isclose(by_turn["x5"]["prev_text_similarity"], fuzz.ratio("turn off the fan", "turn the fan on") / 100, rel_tol=1e-6)
    assert (by_turn["x5"]["next_word_count"], by_turn["x0"]["next_word_count"], by_turn["y0"]["next_word_count"]) == (None, 4, 3)


def test_missing_stages_are_null_not_zero(hand_made):
    c = _row(hand_made, "c")
    assert c["wake_missing"] == c["asr_missing"] == c["nlu_missing"] == c["er_missing"] == c["result_missing"] == 1
    for name in ("wake_score", "asr_confidence", "nlu_confidence", "er_min_score", "result_latency_ms",
                 "asr_nbest_margin", "slots_in_asr_text", "next_gap_s", "barge_in"):
        assert c[name] is None, name
    assert c["session_length"] == 1


def test_timestamps_with_offsets_and_without(tmp_path):
    rows = [turn(turn_id="a", timestamp="2026-10-01T10:00:00+01:00"), turn(turn_id="b", turn_index=1, timestamp="2026-10-01 09:00:02")]
    features = build_features(load_traces(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert features["next_gap_s"].to_list() == [2.0, None]


def test_features_doc_is_current():
    assert (ROOT / "docs" / "features.md").read_text() == features_markdown()


def test_agent_timing_signals_are_read_where_logged_and_null_where_not(tmp_path):
    """End-of-utterance probability and times to first byte: the value where a stage logged it; null where the stage
    ran without it, and where it did not run (never 0); a frame made before they existed reads as one without them."""
    rows = [turn(turn_id="a", asr={"text": "book a table", "eou_probability": 0.31, "ttfb_ms": 180.0},
                 result={"status": "success", "latency_ms": 900.0, "ttfb_ms": 420.0}),
            turn(turn_id="b", turn_index=1, asr={"text": "for two"}, result={"status": "success"}),
            turn(turn_id="c", turn_index=2)]
    features = build_features(load_traces(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert features.select("asr_eou_probability", "asr_ttfb_ms", "result_ttfb_ms").rows() == [
        (0.31, 180.0, 420.0), (None, None, None), (None, None, None)]
    simulated = simulate(30, seed=1)  # the simulator's stages lack these members
    assert "eou_probability" not in {f.name for f in simulated.schema["asr"].fields}
    assert build_features(simulated)["asr_eou_probability"].null_count() == 30


def test_reference_rows_are_the_feature_plans_own_values(fixture_traces):
    from fpi.pipeline import quantiles
    from fpi.pipeline.features import feature_plan, reference_rows
    turns = load_traces(fixture_traces)
    expected = feature_plan(turns).select("turn_id", *quantiles.SOURCES, "nlu_intent").collect()
    assert reference_rows(turns).equals(expected, null_equal=True)
    assert reference_rows(turns.head(1)).equals(expected.head(1), null_equal=True)  # row-local: any part of the input
