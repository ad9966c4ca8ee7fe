"""Trees compiled to native code predict exactly what LightGBM predicts, and fpi falls back to LightGBM when they can't."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fpi import FailurePointModel, load_traces
from fpi.contract.errors import ModelError
from fpi.pipeline import compiled_trees
from fpi.pipeline.compiled_trees import NativeTrees, softmax
from fpi.pipeline.classify import Pipeline
from fpi.pipeline.model_text import TextTree
from fpi.pipeline.predictor import COMPILE_FROM
from hostile_trees import booster as _booster, hostile_rows as _hostile_rows, trees as _trees, unbounded_rows

MISSING = ["nan", pytest.param("zero", marks=pytest.mark.slow), pytest.param("none", marks=pytest.mark.slow)]


@pytest.mark.parametrize("missing", MISSING)
def test_compiled_trees_give_lightgbm_raw_scores_bit_for_bit(missing, tmp_path, monkeypatch):
    monkeypatch.setattr(compiled_trees, "ROWS_PER_TASK", 300)  # rows taken in order come in many pieces
    booster = _booster(missing, seed=5)
    decisions = {tree.missing(node) for tree in _trees(booster) for node in range(tree.num_leaves - 1)}
    assert {"nan": 2, "zero": 1, "none": 0}[missing] in decisions
    X = _hostile_rows(booster, seed=6)
    for trees in (booster.num_trees(), 3 * 5):  # all rounds, and the first five (num_iteration)
        native = NativeTrees.compile(booster, trees, cache=tmp_path, threads=2)
        expected = booster.predict(X, raw_score=True, num_iteration=trees // 3)
        np.testing.assert_array_equal(native.raw_scores(X), expected)
        np.testing.assert_array_equal(native.raw_scores(np.asfortranarray(X)), expected)  # polars hands over columns
        np.testing.assert_array_equal(native.raw_scores(X[::3]), expected[::3])  # a view: rows apart
        order = np.random.default_rng(3).permutation(len(X))  # rows taken in an order of their own
        np.testing.assert_array_equal(native.raw_scores(X, order), expected)
    np.testing.assert_allclose(softmax(expected), booster.predict(X, num_iteration=5), rtol=0, atol=1e-12)


def _split_features(trees: list[TextTree]) -> list[int]:
    return sorted({feature for tree in trees for feature in tree.split_feature})


@pytest.mark.parametrize("missing", MISSING)
def test_infinite_and_nan_values_in_every_split_feature_give_lightgbm_raw_scores(missing, tmp_path):
    """Thresholds come from the model's text, where a split parting NaN from every number is at +inf (the JSON
    dump wrote 1e300, and a row at +inf went the other way)."""
    booster = _booster(missing, seed=5)
    trees = _trees(booster)
    if missing == "nan":
        assert any(not tree.categorical(n) and tree.threshold[n] == np.inf for tree in trees for n in range(tree.num_leaves - 1))
    X = unbounded_rows(_split_features(trees), booster.num_feature(), seed=3)
    native = NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path)
    np.testing.assert_array_equal(native.raw_scores(X), booster.predict(X, raw_score=True))


def test_compiled_trees_are_cached_by_model(tmp_path):
    booster = _booster("nan", seed=7)
    NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path)
    cached = list(tmp_path.glob("*.o"))
    assert len(cached) == 1 and cached[0].stem == NativeTrees.key(booster.model_to_string(), booster.num_trees())
    assert NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path, compile_if_missing=False) is not None
    assert NativeTrees.compile(booster, 6, cache=tmp_path, compile_if_missing=False) is None  # other trees, other key
    assert NativeTrees.compile(_booster("nan", seed=8), 6, cache=tmp_path, compile_if_missing=False) is None


def test_a_cache_that_cannot_be_written_still_compiles(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    booster = _booster("none", seed=9)
    native = NativeTrees.compile(booster, booster.num_trees(), cache=blocked / "trees")
    X = _hostile_rows(booster, seed=1)
    np.testing.assert_array_equal(native.raw_scores(X), booster.predict(X, raw_score=True))


def _own(model: FailurePointModel, where) -> FailurePointModel:
    """A model of the test's own (the session's is shared)."""
    return FailurePointModel.load(model.save(where / "model"))


@pytest.mark.slow
def test_pipeline_records_are_the_same_whichever_predicts(small_model, fixture_traces, tmp_path):
    turns = load_traces(fixture_traces)
    plain = Pipeline(_own(small_model, tmp_path), predictor="lightgbm").run(turns)
    native = Pipeline(_own(small_model, tmp_path), predictor="native").run(turns)
    assert native.records.equals(plain.records)
    assert native.verdicts.equals(plain.verdicts)


def test_auto_compiles_for_large_runs_only_and_takes_cached_trees_for_any(small_training_set, fixture_traces, monkeypatch,
                                                                         tmp_path):
    """`auto` compiles from COMPILE_FROM turns; below, it predicts with the compiled trees when the cache (the test's
    own) has them, else with LightGBM, and compiles nothing. The records are the same either way."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FPI_CACHE_DIR", str(cache))
    saved = FailurePointModel(num_leaves=7, seed=3).fit(small_training_set, rounds=3).save(tmp_path / "model")
    turns = load_traces(fixture_traces)
    small = Pipeline(FailurePointModel.load(saved), predictor="auto")
    plain = small.run(turns)
    assert small.model.native_ is None and not list(cache.glob("*.o"))
    large = Pipeline(FailurePointModel.load(saved), predictor="auto")
    large.expect(COMPILE_FROM)
    assert large.model.native_ is not None and len(list(cache.glob("*.o"))) == 1
    cached = Pipeline(FailurePointModel.load(saved), predictor="auto")
    native = cached.run(turns)
    assert cached.model.native_ is not None and cached.predictor == "auto"
    assert native.records.equals(plain.records)


def test_without_llvmlite_auto_falls_back_and_native_says_why(small_model, monkeypatch, fixture_traces, tmp_path):
    monkeypatch.setitem(sys.modules, "llvmlite", None)
    model = _own(small_model, tmp_path)
    with pytest.raises(ModelError, match="llvmlite"):
        Pipeline(model, predictor="native").expect(10)
    Pipeline(model, predictor="auto").expect(10)  # a small run looks in the cache: no llvmlite, no error
    auto = Pipeline(model, predictor="auto")
    auto.expect(COMPILE_FROM)
    assert auto.predictor == "lightgbm" and model.native_ is None
    turns = load_traces(fixture_traces)
    assert auto.run(turns).records.height == turns.height


@pytest.mark.slow
def test_shipped_model_compiled_gives_the_same_records(fixture_traces):
    """The same records, and the same raw scores on the fixtures' turns and on rows infinite or NaN in every
    split feature (on 13 features a split is at +inf)."""
    turns = load_traces(fixture_traces)
    plain = Pipeline(FailurePointModel.load(), predictor="lightgbm").run(turns)
    native = Pipeline(FailurePointModel.load(), predictor="native").run(turns)
    assert native.records.equals(plain.records)
    model = FailurePointModel.load()
    ends = unbounded_rows(_split_features(_trees(model.booster_)), len(model.feature_names_), seed=4)
    matrix = np.vstack([model.matrix(plain.features), ends])
    lightgbm_scores = model.raw_scores(matrix)
    np.testing.assert_array_equal(model.compile().raw_scores(matrix), lightgbm_scores)


@pytest.mark.slow
def test_the_command_line_predicts_alike_and_says_when_it_cannot_compile(small_model, fixture_traces, tmp_path, monkeypatch):
    from conftest import run_cli

    model = small_model.save(tmp_path / "model")
    outputs = {}
    for predictor in ("lightgbm", "native"):
        outputs[predictor] = tmp_path / f"{predictor}.jsonl"
        result = run_cli("classify", fixture_traces, "--model", model, "--predictor", predictor, "-o", outputs[predictor])
        assert result.exit_code == 0, result.stderr
    assert outputs["native"].read_bytes() == outputs["lightgbm"].read_bytes()
    monkeypatch.setitem(sys.modules, "llvmlite", None)
    refused = run_cli("classify", fixture_traces, "--model", model, "--predictor", "native", "-o", tmp_path / "no.jsonl")
    assert refused.exit_code != 0 and "llvmlite" in refused.stderr and not (tmp_path / "no.jsonl").exists()
