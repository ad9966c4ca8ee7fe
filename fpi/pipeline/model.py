"""The failure-point classifier: LightGBM multiclass over the six labels, with scikit-learn's
conventions. It encodes features, predicts (with LightGBM, or its trees compiled: `compiled_trees`),
saves and loads; a model folder is vetted in `model_folder` and fitted in `model_fitting`.

Saved as LightGBM's own text model plus JSON metadata, so loading a model
someone sent you runs no code from it. A loaded model keeps the text, which LightGBM parses only
when something needs its booster (`model_folder.SavedBooster`): classifying with compiled trees
never imports LightGBM."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from pathlib import Path

import numpy as np
import polars as pl

from fpi.contract.atomic_files import atomic_write_dir
from fpi.contract.distribution import version
from fpi.contract.errors import ModelError
from fpi.contract.trace_format import STAGES
from fpi.pipeline import model_fitting
from fpi.pipeline.compiled_trees import NativeTrees, softmax
from fpi.pipeline.features import CATEGORICAL, build_features, encoded_matrix
from fpi.pipeline.model_folder import (BOOSTER_FILE, METADATA_FILE, MODEL_FORMAT, SavedBooster, default_model_dir,
                                       read_model_folder, training_data)
from fpi.pipeline.quantiles import Reference

if TYPE_CHECKING:
    import lightgbm as lgb


def _as_features(turns_or_features: pl.DataFrame, reference: Reference | None = None) -> pl.DataFrame:
    if "wake_missing" in turns_or_features.columns:
        return turns_or_features
    return build_features(turns_or_features, reference=reference)


def impossible(features: pl.DataFrame, classes: list[str]) -> np.ndarray:
    """Which labels a turn cannot have: a stage that did not run on it cannot be where it failed."""
    mask = np.zeros((features.height, len(classes)), dtype=bool)
    for k, label in enumerate(classes):
        if label in STAGES:
            mask[:, k] = (features[f"{label}_missing"] == 1.0).fill_null(False).to_numpy()
    return mask


class FailurePointModel:
    """Predicts each turn's failure point from its features; scikit-learn conventions."""

    feature_names_: list[str]
    classes_: list[str]
    vocabularies_: dict[str, list[str]]
    best_iteration_: int
    init_rounds_: int
    reference_: Reference  # quantile tables of the training turns: the fallback for sources an input has too few of
    validation_metrics_: dict
    data_fingerprint_: str
    training_rows_: dict[str, int]
    labels_used_: dict
    fold_scores_: list[float]  # macro-F1 on each cross-validation fold (or the held-out split) of the last fit
    selection_: dict  # how `fpi train` chose among ways of learning (fpi.learning.training)
    distributions_: dict[str, list[float]]  # training features at 101 quantiles (fpi.pipeline.log_profile)
    trained_prior_: dict[str, float]  # each label's share of training, as weighted in fitting

    def __init__(self, *, n_estimators: int = 600, learning_rate: float = 0.2, num_leaves: int = 63,
                 min_child_samples: int = 50, feature_fraction: float = 0.8, lambda_l2: float = 1.0,
                 class_weight: str | None = "sqrt_balanced", valid_fraction: float = 0.15,
                 early_stopping_rounds: int = 40, seed: int = 0, num_threads: int = 2):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.lambda_l2 = lambda_l2
        self.class_weight = class_weight
        self.valid_fraction = valid_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.num_threads = num_threads
        self.native_: NativeTrees | None = None  # set by compile()
        self._booster_: lgb.Booster | SavedBooster | None = None  # a loaded model's stays text until LightGBM is needed
        self._trees_hash_: tuple[object, int, int, Any] | None = None  # the trees' text is slow to write out
        self.fold_scores_ = []
        self.selection_ = {}
        self.distributions_ = {}
        self.trained_prior_ = {}

    # ------------------------------------------------------------ encoding

    def _matrix(self, features: pl.DataFrame) -> np.ndarray:
        """Feature matrix in the model's column order; categories by the learned vocabularies."""
        return encoded_matrix(features, self.feature_names_, self.vocabularies_)

    # ------------------------------------------------------------ fitting

    def fit(self, turns: pl.DataFrame, labels: pl.Series | None = None, *, weights: pl.Series | None = None,
            init: FailurePointModel | None = None, features: pl.DataFrame | None = None, rounds: int | None = None,
            cross_validate: bool = False, on_iteration: Callable[[int, int], None] | None = None) -> FailurePointModel:
        """Fit on loaded turns and their labels (`fpi.pipeline.model_fitting.fit`). Turns without a label
        still give their neighbours' dialogue context; `weights` scales each labeled turn (weak labels count
        less); with `init`, boosting continues from that model's trees; `rounds` fixes how many; `cross_validate`
        chooses them by cross-validation however many the labels."""
        return model_fitting.fit(self, turns, labels, weights=weights, init=init, features=features, rounds=rounds,
                                 cross_validate=cross_validate, on_iteration=on_iteration)

    # ------------------------------------------------------------ prediction

    @property
    def booster_(self) -> lgb.Booster:
        """LightGBM's booster of the model's trees (a loaded model's is parsed from its text here, when first asked for)."""
        trees = self._fitted()
        return trees.booster() if isinstance(trees, SavedBooster) else trees

    @booster_.setter
    def booster_(self, booster: lgb.Booster) -> None:
        self._booster_ = booster

    def _fitted(self) -> lgb.Booster | SavedBooster:
        """The model's trees: LightGBM's booster, or a loaded model's text, which answers without LightGBM
        what naming the model and compiling its trees ask."""
        if self._booster_ is None:
            raise ModelError("this FailurePointModel is not fitted: call fit() or FailurePointModel.load()")
        return self._booster_

    def _check_fitted(self) -> None:
        self._fitted()

    def _trees(self) -> int:
        """How many trees predict: LightGBM's `num_iteration=best_iteration_`."""
        trees = self._fitted()
        per_round = trees.num_model_per_iteration()
        return min(trees.num_trees(), self.best_iteration_ * per_round) if self.best_iteration_ > 0 else trees.num_trees()

    def compile(self, *, cache: Path | None = None, threads: int | None = None,
                compile_if_missing: bool = True) -> FailurePointModel:
        """Predict with the trees compiled to native code from now on (`fpi.pipeline.compiled_trees`): compiled once per
        model and machine, then read from the cache; the same raw scores as LightGBM, bit for bit. With
        `compile_if_missing=False` only trees already in the cache are taken (else `native_` stays None)."""
        self.native_ = NativeTrees.compile(self._fitted(), self._trees(), cache=cache, threads=threads or self.num_threads,
                                           compile_if_missing=compile_if_missing)
        return self

    def raw_scores(self, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Each class's raw score (before softmax) for the rows of the model's input matrix (only `rows`, if given:
        their scores in that order)."""
        if self.native_ is not None:
            order = self._alike_first(X)
            if rows is None:
                return self.native_.raw_scores(X, order)
            wanted = np.zeros(len(X), dtype=bool)
            wanted[rows] = True
            return self.native_.raw_scores(X, order[wanted[order]])[rows]
        X = X if rows is None else X[rows]
        raw = np.asarray(self.booster_.predict(X, num_iteration=self.best_iteration_, raw_score=True))
        return raw.reshape(len(X), self.booster_.num_model_per_iteration())  # LightGBM gives no rows as one flat array

    def _alike_first(self, X: np.ndarray) -> np.ndarray:
        """The rows of X ordered by the stages missing, then by each category (as many as one 64-bit key holds):
        rows alike there mostly go the same way through the trees, so compiled trees predict them faster in
        that order."""
        key, span = np.zeros(len(X), dtype=np.uint64), 1
        flags = [name for name in self.feature_names_ if name.endswith("_missing")]
        for name in flags + [name for name in self.feature_names_ if name in self.vocabularies_]:
            size = len(self.vocabularies_[name]) + 1 if name in self.vocabularies_ else 2  # + 1: not in the vocabulary
            if span * size >= 1 << 63:
                break
            codes = np.nan_to_num(X[:, self.feature_names_.index(name)], nan=size - 1).clip(0, size - 1)
            key, span = key * np.uint64(size) + codes.astype(np.uint64), span * size
        return np.argsort(key, kind="stable")

    def _proba_matrix(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.raw_scores(X))

    def _possible(self, probabilities: np.ndarray, features: pl.DataFrame) -> np.ndarray:
        """Probabilities with the labels a turn cannot have set to 0, renormalised."""
        kept = np.where(impossible(features, self.classes_), 0.0, probabilities)
        total = kept.sum(axis=1, keepdims=True)
        return np.divide(kept, total, out=np.asarray(probabilities, dtype=float).copy(), where=total > 0)

    def matrix(self, turns_or_features: pl.DataFrame) -> np.ndarray:
        """The model's input matrix for these turns (for explanations and benchmarks)."""
        self._check_fitted()
        return self._matrix(_as_features(turns_or_features, self.reference_))

    def predict_proba(self, turns_or_features: pl.DataFrame, raw: np.ndarray | None = None) -> np.ndarray:
        """Probability of each label (columns in `classes_` order), one row per turn; a label whose
        stage did not run on the turn gets 0. `raw`: the turns' raw scores, when already computed."""
        self._check_fitted()
        features = _as_features(turns_or_features, self.reference_)
        return self._possible(self._proba_matrix(self._matrix(features)) if raw is None else softmax(raw), features)

    def predict(self, turns_or_features: pl.DataFrame) -> list[str]:
        probabilities = self.predict_proba(turns_or_features)
        return np.asarray(self.classes_)[probabilities.argmax(axis=1)].tolist()

    # ------------------------------------------------------------ persistence

    def metadata(self) -> dict:
        self._check_fitted()
        from importlib.metadata import version as installed  # not importing LightGBM: a Spark driver saves a loaded
        # model for its executors, and compiled trees predict

        params = {k: v for k, v in vars(self).items() if not k.endswith("_")}
        return {
            "format": "fpi-model", "format_version": MODEL_FORMAT,
            "fpi_version": version(), "lightgbm_version": installed("lightgbm"),
            "classes": self.classes_, "features": self.feature_names_, "categorical": [n for n in CATEGORICAL if n in self.feature_names_],
            "vocabularies": self.vocabularies_, "params": params, "best_iteration": self.best_iteration_,
            "training_rows": self.training_rows_, "data_fingerprint": self.data_fingerprint_,
            "validation_metrics": self.validation_metrics_, "reference": self.reference_.to_json(),
            "labels_used": self.labels_used_, "continued_from_rounds": self.init_rounds_,
            **({"selection": self.selection_} if self.selection_ else {}),
            **({"training_data": {"prior": self.trained_prior_, "distributions": self.distributions_}}
               if self.trained_prior_ else {}),
        }

    def save(self, directory: str | Path) -> Path:
        """Write booster.txt (LightGBM text) and model.json (metadata) into `directory`."""
        booster = self._fitted().model_to_string(num_iteration=self.best_iteration_)  # a loaded model's own text: LightGBM need not parse it
        meta = {**self.metadata(), "booster_sha256": hashlib.sha256(booster.encode("utf-8")).hexdigest()}
        out = Path(directory)
        atomic_write_dir(out, {BOOSTER_FILE: booster.encode("utf-8"),
                               METADATA_FILE: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")})
        return out

    @classmethod
    def load(cls, directory: str | Path | None = None) -> FailurePointModel:
        """Load a saved model (the packaged default when `directory` is None). Never unpickles. LightGBM reads
        the trees' text when something first needs the booster (a text it cannot read is a ModelError then)."""
        where = Path(directory) if directory is not None else default_model_dir()
        meta, saved = read_model_folder(where)
        model = cls(**{k: v for k, v in meta.get("params", {}).items() if k in cls().__dict__})
        model._booster_ = saved
        model.feature_names_ = meta["features"]
        model.classes_ = meta["classes"]
        model.vocabularies_ = meta["vocabularies"]
        model.best_iteration_ = meta["best_iteration"]
        model.validation_metrics_ = meta.get("validation_metrics", {})
        model.data_fingerprint_ = meta.get("data_fingerprint", "")
        model.training_rows_ = meta.get("training_rows", {})
        model.reference_ = Reference.from_json(meta.get("reference") or {})
        model.labels_used_ = meta.get("labels_used", {})
        model.init_rounds_ = int(meta.get("continued_from_rounds", 0))
        model.selection_ = meta.get("selection", {}) if isinstance(meta.get("selection"), dict) else {}
        model.trained_prior_, model.distributions_ = training_data(meta)
        return model

    def _trees_hash(self) -> Any:
        """A sha256 fed with the predicting trees' text (a copy, to go on with), kept while the booster and
        its rounds stay the same: writing the text out takes longer than classifying a small file."""
        trees = self._fitted()
        key = (trees, self.best_iteration_, trees.num_trees())
        if self._trees_hash_ is None or self._trees_hash_[:3] != key:
            text = trees.model_to_string(num_iteration=self.best_iteration_)
            self._trees_hash_ = (*key, hashlib.sha256(text.encode()))
        return self._trees_hash_[3].copy()

    def fingerprint(self) -> str:
        """Identifies what the model computes: its trees, classes, features and vocabularies
        (not the versions that wrote or read it)."""
        self._check_fitted()
        digest = self._trees_hash()
        digest.update(json.dumps([self.classes_, self.feature_names_, self.vocabularies_, self.reference_.to_json()],
                                 sort_keys=True).encode())
        return digest.hexdigest()
