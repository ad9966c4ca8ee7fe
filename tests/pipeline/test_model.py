import hashlib
import json
import shutil

import numpy as np
import polars as pl
import pytest

from fpi import FailurePointModel, ModelError, UsageError, build_features, load_traces
from fpi.pipeline.features import CATEGORICAL, FEATURE_NAMES
from fpi.pipeline.model_fitting import session_split
from fpi.pipeline.model_folder import BOOSTER_FILE, METADATA_FILE, default_model_dir


def test_save_load_round_trip_gives_identical_predictions(small_model, tmp_path, fixture_traces):
    turns = load_traces(fixture_traces)
    small_model.save(tmp_path / "m")
    loaded = FailurePointModel.load(tmp_path / "m")
    assert np.array_equal(loaded.predict_proba(turns), small_model.predict_proba(turns))
    assert loaded.fingerprint() == small_model.fingerprint()


@pytest.mark.slow
def test_the_fingerprint_follows_the_trees_and_tables_it_names(small_training_set, tmp_path):
    model = FailurePointModel(n_estimators=8, learning_rate=0.3, early_stopping_rounds=4, seed=1).fit(small_training_set)
    first = model.fingerprint()
    assert model.fingerprint() == first  # kept, not written out again
    model.best_iteration_ = 2 if model.best_iteration_ != 2 else 3
    fewer_trees = model.fingerprint()
    model.vocabularies_ = {**model.vocabularies_, "device_type": ["other"]}
    other_tables = model.fingerprint()
    model.fit(small_training_set.head(3000))  # a new booster
    assert len({first, fewer_trees, other_tables, model.fingerprint()}) == 4


@pytest.mark.slow
def test_same_data_and_seed_give_the_same_model_file(small_training_set, tmp_path):
    params = dict(n_estimators=15, learning_rate=0.3, early_stopping_rounds=5, seed=9)
    FailurePointModel(**params).fit(small_training_set).save(tmp_path / "a")
    FailurePointModel(**params).fit(small_training_set).save(tmp_path / "b")
    for name in (BOOSTER_FILE, METADATA_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_metadata_records_what_a_reader_needs(small_model):
    meta = small_model.metadata()
    assert meta["classes"] == ["wake", "asr", "nlu", "er", "result", "correct"]
    assert meta["format_version"] == 1 and len(meta["data_fingerprint"]) == 64
    assert set(meta["vocabularies"]) == set(CATEGORICAL) == {
        "nlu_domain", "nlu_intent", "nlu_runner_up_intent", "result_status", "result_action", "device_type", "locale",
        "next_result_status", "next_result_action", "prev_result_action", "next_intent"}
    assert 0 < meta["validation_metrics"]["macro_f1"] <= 1
    assert meta["training_rows"]["train"] + meta["training_rows"]["valid"] == 6000


def test_validation_split_never_cuts_a_session(small_training_set):
    valid = session_split(small_training_set["session_id"], 0.2, seed=1)
    sides = small_training_set.with_columns(valid=pl.Series(valid)).group_by("session_id").agg(pl.col("valid").n_unique())
    assert (sides["valid"] == 1).all()
    assert 0.1 < valid.mean() < 0.3


def test_unseen_categories_do_not_break_prediction(small_model, fixture_traces):
    features = build_features(load_traces(fixture_traces)).head(50).with_columns(
        nlu_intent=pl.lit("never_seen_intent"), device_type=pl.lit("toaster"))
    proba = small_model.predict_proba(features)
    assert proba.shape == (50, 6) and np.allclose(proba.sum(axis=1), 1.0)


def test_unfitted_model_and_missing_labels_are_clear_errors(small_training_set):
    with pytest.raises(ModelError, match="not fitted"):
        FailurePointModel().predict(small_training_set)
    with pytest.raises(UsageError, match="gold label"):
        FailurePointModel().fit(small_training_set.with_columns(label=pl.lit(None, dtype=pl.String)))


def test_a_model_from_an_earlier_fpi_reads_the_features_it_names(fixture_traces):
    shipped = FailurePointModel.load(default_model_dir())  # trained before the n-best spread, actions and next intent
    assert set(shipped.feature_names_) < set(FEATURE_NAMES) and "result_action" not in shipped.feature_names_
    features = build_features(load_traces(fixture_traces)).head(40)
    assert np.array_equal(shipped.predict_proba(features), shipped.predict_proba(features.drop("result_action", "next_intent")))
    meta = shipped.metadata()
    assert set(meta["vocabularies"]) == set(meta["categorical"]) == {n for n in CATEGORICAL if n in shipped.feature_names_}


def test_lightgbm_reads_a_loaded_models_trees_only_when_something_needs_them(tmp_path, fixture_traces):
    """Loading checks the trees' text and the model is named from it; LightGBM parses it when something first
    needs the booster, and a text it cannot read is a ModelError there."""
    where = tmp_path / "m"
    shutil.copytree(default_model_dir(), where)
    text = (where / BOOSTER_FILE).read_text().replace("objective=multiclass num_class:6", "objective=nonsense", 1)
    (where / BOOSTER_FILE).write_text(text)
    meta = json.loads((where / METADATA_FILE).read_text())
    (where / METADATA_FILE).write_text(json.dumps({**meta, "booster_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    model = FailurePointModel.load(where)
    assert model.fingerprint() != FailurePointModel.load().fingerprint()
    with pytest.raises(ModelError, match="booster.txt: not a readable LightGBM text model"):
        model.predict(load_traces(fixture_traces).head(10))


def test_loading_a_model_that_does_not_fit_this_fpi(small_model, tmp_path):
    small_model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    with pytest.raises(ModelError, match="not a model directory"):
        FailurePointModel.load(tmp_path / "nowhere")
    for change, message in (({"format_version": 99}, "model format 99 is not supported"),
                            ({"features": meta["features"][:-1] + ["shoe_size"]}, "features unknown to this fpi \\(shoe_size\\)"),
                            ({"format": "pickle"}, "not an fpi model")):
        shutil.copytree(tmp_path / "m", tmp_path / "x", dirs_exist_ok=True)
        (tmp_path / "x" / METADATA_FILE).write_text(json.dumps({**meta, **change}))
        with pytest.raises(ModelError, match=message):
            FailurePointModel.load(tmp_path / "x")
    (tmp_path / "x" / METADATA_FILE).write_text(json.dumps(meta))
    (tmp_path / "x" / BOOSTER_FILE).write_text("not a booster")
    with pytest.raises(ModelError, match="changed since model.json was written"):
        FailurePointModel.load(tmp_path / "x")
    (tmp_path / "x" / METADATA_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "booster_sha256"}))
    with pytest.raises(ModelError, match="not a complete LightGBM text model"):  # a model from before checksums
        FailurePointModel.load(tmp_path / "x")


def test_shipped_default_model_loads_and_is_small():
    model = FailurePointModel.load()
    assert model.classes_ == ["wake", "asr", "nlu", "er", "result", "correct"]
    from fpi.pipeline.model_folder import default_model_dir
    size = sum(p.stat().st_size for p in default_model_dir().iterdir())
    assert size < 8 * 2**20
