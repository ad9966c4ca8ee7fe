"""A model taught by the logs themselves, for logs the shipped model is out of its depth on.

A model trained on simulated assistants can rank a real system's turns worse than that system's own
confidences do (on a real telephone system's logs: macro-F1 0.28 against 0.48). So when the logs are
unlike the training data and log confidences, fpi learns from them without labels: a cascade of the
stages' own confidences names a first verdict (a stage fails with one minus its confidence, if every
earlier stage held; a result fails on an error status; an ASR error under a confident NLU may have been
recovered); a model of everything else the turns show
(dialogue context, intents, statuses), fitted on those verdicts fold by fold over sessions, corrects
it (co-training: two views of a turn whose mistakes differ); and a model on all features, distilled
from the corrected verdicts, classifies, so its verdicts explain like any model's. Deterministic:
the same logs give the same model."""

from __future__ import annotations

import numpy as np
import polars as pl

from fpi.contract.trace_format import LABELS, STAGES
from fpi.pipeline.features import CATEGORICAL, FEATURE_NAMES, encoded_matrix, frequent_categories
from fpi.pipeline.model import FailurePointModel
from fpi.pipeline.model_fitting import session_folds

CONFIDENCES = {"wake": "wake_score", "asr": "asr_confidence", "nlu": "nlu_confidence", "er": "er_min_score"}
RESULT_HELD, RESULT_FAILED = 0.98, 0.2  # a result's chance of being right without and with an error status
RECOVERED = 0.5  # an NLU reading a wrong transcript with confidence c reads the user right with chance c × this
CONFIDENCE_FEATURES = ("wake_score", "asr_confidence", "asr_nbest_margin", "asr_nbest_mass", "asr_nbest_entropy", "nlu_confidence",
                       "nlu_nbest_margin", "nlu_nbest_entropy", "nlu_runner_up_confidence", "nlu_slot_min_confidence",
                       "slots_in_asr_nbest", "er_min_score", "weakest_stage")  # and their quantiles
FOLDS = 5
MIN_CATEGORY = 30  # a category seen fewer times in these logs is unknown to the view model
VIEW_PARAMS = {"objective": "multiclass", "num_class": len(LABELS), "learning_rate": 0.05, "num_leaves": 15,
               "min_data_in_leaf": 40, "lambda_l2": 10.0, "deterministic": True, "force_col_wise": True,
               "verbosity": -1, "seed": 0}
VIEW_ROUNDS = 100
TAUGHT_ROUNDS = 200  # the distilled model's: it learns a teacher's verdicts, nothing to stop early on


def confident_stages(features: pl.DataFrame) -> list[str]:
    """The stages whose confidence these logs carry on some turn."""
    return [stage for stage, column in CONFIDENCES.items() if features[column].drop_nulls().len()]


def confidence_verdicts(features: pl.DataFrame) -> np.ndarray:
    """Probability of each label (LABELS order) by the cascade of the stages' own confidences.

    A stage's confidence is the chance its own output is right, which for ASR means the transcript word for
    word; but a failure is an error the system did not recover from, and NLU absorbs many ASR errors (a
    dropped "the"). Its confidence speaks of its reading of the text it got, so on a wrong transcript a
    confident reading is right only RECOVERED of the time: that share of the ASR's doubt goes to turns
    that held, not to `asr`. Without an NLU confidence nothing is recovered."""
    alive = np.ones(features.height)
    recovered = np.zeros(features.height)
    probabilities = np.zeros((features.height, len(LABELS)))
    for k, stage in enumerate(STAGES):
        if stage == "result":
            held = np.where(features["result_status"].eq("error").fill_null(False).to_numpy(), RESULT_FAILED, RESULT_HELD)
        else:
            held = features[CONFIDENCES[stage]].cast(pl.Float64).fill_null(1.0).to_numpy()
        held = np.where((features[f"{stage}_missing"] == 1.0).fill_null(False).to_numpy(), 1.0, np.clip(held, 0.0, 1.0))
        if stage == "asr":
            reading = np.clip(features["nlu_confidence"].cast(pl.Float64).fill_null(0.0).to_numpy(), 0.0, 1.0)
            recovered = alive * (1.0 - held) * RECOVERED * reading
        probabilities[:, k] = alive * (1.0 - held) - (recovered if stage == "asr" else 0.0)
        alive = alive * held + (recovered if stage == "nlu" else 0.0)
    probabilities[:, LABELS.index("correct")] = alive
    return np.clip(probabilities, 1e-6, 1.0)


def _encoded(features: pl.DataFrame, names: list[str]) -> tuple[np.ndarray, list[int]]:
    """A matrix of `names`, categories coded by their frequent values in these logs."""
    matrix = encoded_matrix(features, names, frequent_categories(features, names, MIN_CATEGORY))
    return matrix, [k for k, name in enumerate(names) if name in CATEGORICAL]


def _context_view(features: pl.DataFrame, sessions: pl.Series, verdicts: np.ndarray, threads: int) -> np.ndarray:
    """Out-of-fold probabilities of the verdicts from everything but the confidences."""
    import lightgbm as lgb

    names = [name for name in FEATURE_NAMES if not name.startswith(CONFIDENCE_FEATURES)]
    matrix, categorical = _encoded(features, names)
    folds = session_folds(sessions, FOLDS, 0)
    out = np.zeros((features.height, len(LABELS)))
    for k in range(FOLDS):
        held = folds == k
        if not held.any() or held.all():
            continue
        data = lgb.Dataset(matrix[~held], verdicts[~held], categorical_feature=categorical, free_raw_data=False)
        booster = lgb.train(VIEW_PARAMS | {"num_threads": threads}, data, num_boost_round=VIEW_ROUNDS)
        out[held] = booster.predict(matrix[held])
    return out


def adapted_model(features: pl.DataFrame, sessions: pl.Series, *, seed: int = 0, threads: int = 2) -> FailurePointModel | None:
    """A model of these logs taught by their own confidences (None when they log none, or name one verdict only)."""
    if not confident_stages(features):
        return None
    first = confidence_verdicts(features)
    verdicts = first.argmax(axis=1)
    if len(np.unique(verdicts)) < 2:
        return None
    share = np.bincount(verdicts, minlength=len(LABELS)) / len(verdicts)
    combined = first * _context_view(features, sessions, verdicts, threads) / np.maximum(share, 1e-9)
    combined[:, share == 0] = 0.0
    taught = pl.Series("label", np.asarray(LABELS)[combined.argmax(axis=1)], dtype=pl.String)
    model = FailurePointModel(seed=seed, num_threads=threads)
    return model.fit(pl.DataFrame({"session_id": sessions}), taught, features=features, rounds=TAUGHT_ROUNDS)
