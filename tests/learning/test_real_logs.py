"""Logs unlike the training data: the shift and prior of the logs at hand, a model taught by their own
confidences, training chosen by cross-validation, the confidence-threshold rule, the sheet's exploration."""

import numpy as np
import polars as pl
import pytest

from fpi import FailurePointModel, simulate
from fpi.contract.errors import UsageError
from fpi.contract.trace_format import LABELS
from fpi.learning.confidence_rule import ConfidenceRule
from fpi.learning.training import Candidate, _clearly_better, train
from fpi.learning.turns_to_label import choose
from fpi.pipeline.classify import Pipeline
from fpi.pipeline.features import build_features
from fpi.pipeline.log_adaptation import adapted_model, confidence_verdicts
from fpi.pipeline.log_profile import SHIFT_LIMIT, estimate_prior, shift, training_distributions


@pytest.fixture(scope="module")
def telephone() -> pl.DataFrame:
    return simulate(3000, seed=101, profile="telephone-slot-filling")


def test_em_recovers_a_known_prior_shift():
    """Two classes, scores N(-1, 1) and N(1, 1): a model trained on half of each says P(1|x) = sigmoid(2x).
    On logs with 80% of class 1 the estimate lands on 0.8; held halfway to the training prior, between."""
    rng = np.random.default_rng(0)
    truth = rng.random(20_000) < 0.8
    x = np.where(truth, rng.normal(1, 1, truth.size), rng.normal(-1, 1, truth.size))
    one = 1 / (1 + np.exp(-2 * x))
    probabilities = np.column_stack([1 - one, one])
    assert estimate_prior(probabilities, np.array([0.5, 0.5]), strength=0.0)[1] == pytest.approx(0.8, abs=0.015)
    assert 0.6 < estimate_prior(probabilities, np.array([0.5, 0.5]), strength=0.5)[1] < 0.75
    impossible = np.column_stack([probabilities, np.zeros(truth.size)])
    assert estimate_prior(impossible, np.array([0.4, 0.4, 0.2]))[2] == 0.0  # a label no turn can have stays at 0


@pytest.mark.slow
def test_prior_correction_moves_verdicts_toward_the_logs_prior():
    """Simulated logs that fail far less often than the training data: the estimated share of `correct`
    is near the truth, and the records name fewer failures than the model alone."""
    turns = simulate(6000, seed=12, error_rates={"asr": 0.02, "nlu": 0.02, "er": 0.02, "result": 0.01, "wake": 0.01})
    pipeline = Pipeline(rules=None)
    records = pipeline.run(turns).records
    truth = (turns["label"] == "correct").mean()
    assert pipeline.profile is not None and not pipeline.profile.adapted
    assert abs(pipeline.profile.prior["correct"] - truth) < abs(pipeline.profile.trained_prior["correct"] - truth)
    alone = Pipeline(rules=None, adapt="off").run(turns).records
    assert (records["failure_point"] == "correct").sum() > (alone["failure_point"] == "correct").sum()


def test_shift_is_zero_on_the_training_distribution_and_one_far_from_it():
    features = pl.DataFrame({"asr_confidence": np.linspace(0, 1, 500), "session_length": np.arange(500) % 7 + 1.0})
    tables = training_distributions(features)
    assert shift(features, tables)[0] == pytest.approx(0.0, abs=0.02)
    far = features.with_columns(pl.col("asr_confidence") + 5, pl.col("session_length") * 100)
    how_far, distances = shift(far, tables)
    assert how_far == 1.0 and set(distances) == {"asr_confidence", "session_length"}


def test_logs_like_the_training_data_are_in_depth(telephone):
    pipeline = Pipeline(rules=None)
    records = pipeline.run(telephone).records
    assert pipeline.profile.shift is not None and pipeline.profile.shift < SHIFT_LIMIT
    assert pipeline.profile.message() is None and not pipeline.profile.adapted
    assert records["shift"].n_unique() == 1 and records["shift"][0] == pipeline.profile.shift


@pytest.mark.slow
def test_logs_out_of_the_models_depth_are_classified_by_a_model_they_teach(telephone):
    """A model whose training data sat far from these logs: out of its depth, it says so, and a model
    taught by the logs' own confidences classifies them, the same one on every run."""
    model = FailurePointModel.load()
    model.distributions_ = {name: [v * 50 + 100 for v in points] for name, points in model.distributions_.items()}
    first, second = Pipeline(model, rules=None), Pipeline(model, rules=None)
    records, again = first.run(telephone).records, second.run(telephone).records
    assert first.profile.out_of_depth and first.profile.adapted
    assert "shift 1.00" in first.profile.message() and "fpi sample" in first.profile.message()
    assert records["model_sha"][0] != model.fingerprint()[:12] and records.equals(again)
    assert not records["failure_point"].is_in(["wake", "er"]).any()  # stages this assistant lacks
    never = Pipeline(model, rules=None, adapt="prior")
    assert never.run(telephone).records["model_sha"][0] == model.fingerprint()[:12] and never.profile.out_of_depth


def test_the_confidence_cascade_blames_the_first_unsure_stage():
    features = pl.DataFrame({
        "wake_missing": [1.0, 1.0, 1.0], "asr_missing": [0.0, 0.0, 0.0], "nlu_missing": [0.0, 0.0, 0.0],
        "er_missing": [1.0, 1.0, 1.0], "result_missing": [0.0, 0.0, 0.0],
        "wake_score": [None, None, None], "asr_confidence": [0.1, 0.95, 0.95], "nlu_confidence": [0.9, 0.2, 0.95],
        "er_min_score": [None, None, None], "result_status": ["success", "success", "success"]},
        schema_overrides={"wake_score": pl.Float64, "er_min_score": pl.Float64})
    verdicts = np.asarray(LABELS)[confidence_verdicts(features).argmax(axis=1)].tolist()
    assert verdicts == ["asr", "nlu", "correct"]
    assert confidence_verdicts(features)[:, LABELS.index("wake")].max() < 1e-5  # no wake stage, no wake failure


def test_the_cascade_counts_asr_errors_a_confident_nlu_may_have_recovered():
    """ASR 0.6 sure, NLU 0.9: of the ASR's 0.4 doubt, 0.4 × 0.5 × 0.9 = 0.18 held; without an NLU
    confidence, none did. The probabilities still sum to one."""
    features = pl.DataFrame({
        "wake_missing": [1.0, 1.0], "asr_missing": [0.0, 0.0], "nlu_missing": [0.0, 0.0], "er_missing": [1.0, 1.0],
        "result_missing": [0.0, 0.0], "wake_score": [None, None], "asr_confidence": [0.6, 0.6],
        "nlu_confidence": [0.9, None], "er_min_score": [None, None], "result_status": ["success", "success"]},
        schema_overrides={"wake_score": pl.Float64, "er_min_score": pl.Float64, "nlu_confidence": pl.Float64})
    verdicts = confidence_verdicts(features)
    expected = {"asr": (0.22, 0.4), "nlu": (0.06, 0.0), "result": (0.72 * 0.02, 0.6 * 0.02), "correct": (0.72 * 0.98, 0.6 * 0.98)}
    for label, (with_nlu, without) in expected.items():
        assert verdicts[:, LABELS.index(label)] == pytest.approx([with_nlu, max(without, 1e-6)], abs=1e-9)
    assert verdicts.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_no_confidences_nothing_to_learn_from():
    turns = simulate(1500, seed=4, profile="llm-agent")
    assert adapted_model(build_features(turns), turns["session_id"]) is None


@pytest.mark.slow
def test_training_keeps_scratch_when_continuing_is_worse(telephone):
    """A base model trained with its labels swapped (correct for asr, nlu for result, ...) is confidently wrong:
    cross-validation sees it and trains from scratch, and says so with the spread over folds."""
    swapped = {"correct": "asr", "asr": "correct", "nlu": "result", "result": "nlu", "wake": "er", "er": "wake"}
    source = simulate(6000, seed=9, profile="telephone-slot-filling")
    misleading = FailurePointModel(n_estimators=300, learning_rate=0.5, early_stopping_rounds=300, seed=1).fit(
        source.with_columns(pl.col("label").replace_strict(swapped)))
    labeled = telephone.with_columns(label=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.col("label")))
    training = train(labeled, base=misleading, base_name="a misleading model", threads=1)
    scores = {c.method: c.mean for c in training.candidates}
    assert training.chosen.method == "scratch" and scores["scratch"] > scores["continue"]
    assert "trained from scratch: macro-F1" in training.summary() and " ± " in training.summary()
    assert "over 5 folds of 300 labels" in training.summary() and "continued from a misleading model" in training.summary()
    assert training.model.selection_["method"] == "scratch"


def test_a_challenger_must_win_by_more_than_chance():
    steady = Candidate("scratch", "s", (0.70, 0.72, 0.71, 0.69, 0.73))
    assert _clearly_better(Candidate("continue", "c", (0.75, 0.77, 0.76, 0.74, 0.78)), steady)
    assert not _clearly_better(Candidate("continue", "c", (0.703, 0.723, 0.713, 0.693, 0.733)), steady)  # by less than TIE
    assert not _clearly_better(Candidate("continue", "c", (0.95, 0.52, 0.90, 0.55, 0.88)), steady)  # better on average, by chance


@pytest.mark.slow
def test_logs_out_of_the_bases_depth_train_from_scratch(telephone):
    base = FailurePointModel.load()
    base.distributions_ = {name: [v * 50 + 100 for v in points] for name, points in base.distributions_.items()}
    labeled = telephone.with_columns(label=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.col("label")))
    training = train(labeled, base=base, threads=1)
    assert [c.method for c in training.candidates] == ["scratch"]
    assert "continuing from the shipped model was not tried: these logs sit out of its depth (shift 1.00)" in training.summary()


def test_training_needs_enough_labels_in_enough_sessions(telephone):
    three = telephone.with_columns(label=pl.when(pl.int_range(pl.len()) < 3).then(pl.col("label")))
    with pytest.raises(UsageError, match="at least 20 labeled turns in 2 or more sessions.*3 in 1"):
        train(three)


def test_confidence_rule_finds_each_stages_threshold():
    rng = np.random.default_rng(3)
    asr, nlu = rng.random(2000), rng.random(2000)
    gold = np.where(asr < 0.3, "asr", np.where(nlu < 0.5, "nlu", "correct")).tolist()
    features = pl.DataFrame({"wake_score": None, "asr_confidence": asr, "nlu_confidence": nlu, "er_min_score": None,
                             "result_status": "success"}, schema_overrides={"wake_score": pl.Float64, "er_min_score": pl.Float64})
    rule = ConfidenceRule.fit(features, gold)
    assert np.mean(np.asarray(rule.predict(features)) == np.asarray(gold)) > 0.97  # thresholds on a grid of 41 quantiles
    assert set(rule.thresholds) == {"asr", "nlu"} and abs(rule.thresholds["asr"] - 0.3) < 0.03 and abs(rule.thresholds["nlu"] - 0.5) < 0.03
    assert not rule.result_status  # no result ever fails here
    assert rule.describe().startswith("asr < 0.") and ", nlu < 0." in rule.describe()
    assert ConfidenceRule({}, True).describe() == "no confidences; a failed result status blames the result"


def test_the_sheet_spreads_over_guesses_confidences_and_sessions(telephone):
    batch = Pipeline().run(telephone.with_columns(label=pl.lit(None, pl.String)))
    picked = choose(batch, 60, seed=2)
    assert picked.height == 60 and picked["row"].n_unique() == 60 and picked.equals(choose(batch, 60, seed=2))
    assert picked["why"].str.starts_with("drawn at random among the turns the model calls").all()
    chosen = batch.records[picked["row"]]
    assert chosen["session_id"].n_unique() == 60  # one turn a session while sessions last
    guesses = chosen["model_failure_point"].value_counts()
    assert guesses.height == batch.records["model_failure_point"].n_unique()  # every guess the model makes has room
    assert not choose(batch, 60, seed=3).equals(picked)
