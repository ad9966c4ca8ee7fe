"""How a turn becomes a verdict: one object runs a batch of whole sessions through
features → model → rules → explain, once, and keeps what each step computed.

A batch must hold every turn of its sessions (dialogue features look at the next and
previous turn). The whole input is one batch in memory; a streamed run or a Spark task
hands the same pipeline one partition of sessions at a time."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from fpi.pipeline.adaptation import Adaptation
from fpi.pipeline.explain import explanations
from fpi.pipeline.features import build_features, neighbour_rows
from fpi.pipeline.log_adaptation import adapted_model
from fpi.pipeline.log_profile import HeardScores, LogProfile
from fpi.io.traces import Source, load_traces
from fpi.io.mapping import Mapping
from fpi.contract.errors import FpiWarning, ModelError
from fpi.pipeline.model import FailurePointModel
from fpi.pipeline.native_cache import UntrustedCache
from fpi.pipeline.predictor import Predictor
from fpi.pipeline.quantiles import Reference
from fpi.contract.records import CONTEXT_COLUMNS, SHA_DIGITS, in_contract_order
from fpi.pipeline.rules import RuleSet, decide, evaluation_frame, load_rules, rule_matches
from fpi.contract.trace_format import LABELS, TURN_SCHEMA

PROBABILITY_DIGITS = 6
ADAPT_TURNS = 50_000  # a model taught by the logs learns from at most this many sampled turns (whole sessions by hash)
SESSION_HASH = pl.col("_session").hash(seed=2)

Progress = Callable[[int, int], None]  # (turns done, turns in all)


@dataclass(frozen=True)
class Batch:
    """What the pipeline computed for one batch; every frame is row-aligned with `turns`."""

    turns: pl.DataFrame
    neighbours: pl.DataFrame  # row of the next and previous turn of the session (`_next_row`, `_prev_row`)
    features: pl.DataFrame
    verdicts: pl.DataFrame  # the model's verdict before rules: ids, model_failure_point, confidence, probabilities
    matches: pl.DataFrame  # one boolean column per rule, in run order
    records: pl.DataFrame  # the records-v1 contract (`fpi.contract.records`)


class Pipeline:
    """A model, a rule set and what to explain, ready to classify batches of sessions.

    `rules="default"` takes the shipped rules, `None` runs the model alone. `explain_top_k`
    adds each turn's top SHAP features (the turns not `correct`, or all with `explain_all`).
    `predictor="native"` predicts with the model's trees compiled (`fpi.pipeline.compiled_trees`: once per model
    and machine), `"lightgbm"` with LightGBM, `"auto"` with compiled trees already in the cache, and compiles them for runs
    of `COMPILE_FROM` turns or more (`fpi.pipeline.predictor`); the records are the same whichever predicts.

    Before the first batch the pipeline hears the whole input (or its sample, `fit_logs`): how far it
    sits from the model's training data and the label prior it seems to have (`fpi.pipeline.log_profile`).
    The model's probabilities move to that prior (`adapt="prior"`); and with `adapt="auto"`, on logs the model
    is out of its depth on, a model taught by the logs' own confidences classifies instead
    (`fpi.pipeline.log_adaptation`); `adapt="off"`: the model alone. In memory, every `run` without
    `fitted` tables is a whole input and is heard anew."""

    def __init__(self, model: FailurePointModel | None = None, rules: RuleSet | Literal["default"] | None = "default", *,
                 explain_top_k: int | None = None, explain_all: bool = False, predictor: Predictor | str = Predictor.auto,
                 adapt: Adaptation | str = Adaptation.auto):
        self.model = model if model is not None else FailurePointModel.load()
        self.base = self.model
        self.adapt = Adaptation(adapt)
        self.profile: LogProfile | None = None
        self.rules = load_rules() if rules == "default" else rules or RuleSet(())
        self.explain_top_k = explain_top_k
        self.explain_all = explain_all
        self.model_sha = self.model.fingerprint()[:SHA_DIGITS]
        self.rules_sha = self.rules.identity()["fingerprint"][:SHA_DIGITS] if len(self.rules) else None
        self.predictor = Predictor(predictor)
        self._expected = 0
        self._looked_up: FailurePointModel | None = None  # the model whose compiled trees the cache did not have

    def expect(self, turns: int) -> None:
        """Hear how many turns the whole run holds (an engine that hands over batches knows it first),
        so `predictor="auto"` can choose for the run, not the batch."""
        self._expected = max(self._expected, turns)
        self._choose_predictor()

    def _choose_predictor(self) -> None:
        """Compiled trees when the run compiles them (`native`, or `auto` from `COMPILE_FROM` turns) or, for `auto`,
        when the cache has them (looked up once per model: every batch is heard); else LightGBM."""
        compiles = self.predictor.compiles(self._expected)
        if (self.predictor is Predictor.lightgbm or self.model.native_ is not None
                or (not compiles and self._looked_up is self.model)):
            return
        try:
            self.model.compile(compile_if_missing=compiles)
        except UntrustedCache as exc:  # never run code another user could have written
            warnings.warn(f"{exc}; LightGBM predicts instead", FpiWarning, stacklevel=2)
            self.predictor = Predictor.lightgbm
        except ModelError:
            if self.predictor is Predictor.native:
                raise
            self.predictor = Predictor.lightgbm  # auto: LightGBM predicts the same records, only slower
        self._looked_up = self.model

    def fit_logs(self, features: pl.DataFrame, sessions: pl.Series, raw: np.ndarray | None = None) -> LogProfile:
        """Hear the whole input's features (or its sample's) and their sessions, once, before any batch: the
        logs' shift and prior against the model's training data, and on logs it is out of its depth on (with
        `adapt="auto"`), the model taught by the logs' own confidences that classifies from then on. `raw`: the
        base model's raw scores of these turns, when already computed."""
        profile = LogProfile.fit(features, self.base.predict_proba(features, raw), self.base.classes_,
                                 self.base.trained_prior_ if self.adapt is not Adaptation.off else {}, self.base.distributions_)
        adapted = None
        if self.adapt is Adaptation.auto and profile.out_of_depth:
            taught = features.with_columns(_session=sessions.alias("_session"))
            if taught.height > ADAPT_TURNS:  # whole sessions, by a hash of their id
                taught = taught.sort(SESSION_HASH, "_session", maintain_order=True).head(ADAPT_TURNS)
            adapted = adapted_model(taught.drop("_session"), taught["_session"], threads=1)  # small data: one thread is as fast
            if adapted is not None:
                adapted.reference_ = self.base.reference_  # features read on the same fallback tables as before
                profile = replace(profile, adapted=True)
        self.adopt(profile, adapted)
        return profile

    def adopt(self, profile: LogProfile, adapted: FailurePointModel | None = None) -> None:
        """What `fit_logs` heard, here or elsewhere (a Spark driver, for the pipeline of one of its tasks)."""
        self.profile = profile
        self.model = adapted if adapted is not None else self.base
        self.model_sha = self.model.fingerprint()[:SHA_DIGITS]
        self._choose_predictor()

    def _hear_whole(self, features: pl.DataFrame, sessions: pl.Series) -> np.ndarray | None:
        """A batch that is the whole input, heard as every engine hears its sample (`engines.whole_input.hear`);
        when the model keeps classifying, its raw scores of every turn, the sample's predicted once."""
        sample = Reference.sampled(features).to_numpy()
        heard = features[sample]
        known = self.base.raw_scores(self.base.matrix(heard))
        self.fit_logs(heard, sessions.gather(sample), known)
        return self._completed(features, sample, known) if self.model is self.base else None

    def _completed(self, features: pl.DataFrame, rows: np.ndarray, known: np.ndarray) -> np.ndarray:
        """The raw scores of every turn of `features`, where those of `rows` are `known`: only the rest predicted."""
        raw = np.empty((features.height, known.shape[1]))
        raw[rows] = known
        rest = np.ones(features.height, dtype=bool)
        rest[rows] = False
        if rest.any():
            raw[rest] = self.model.raw_scores(self.model.matrix(features), np.flatnonzero(rest))
        return raw

    def _reused(self, turns: pl.DataFrame, features: pl.DataFrame, heard: HeardScores | None) -> np.ndarray | None:
        """A batch's raw scores with those of its turns the run heard reused (by `line`), when the model that
        heard them classifies; None: every turn is predicted."""
        if heard is None or self.model is not self.base or "line" not in turns.columns:
            return None
        rows, known = heard.among(turns["line"].to_numpy())
        return self._completed(features, rows, known) if len(rows) else None

    def verdicts(self, turns: pl.DataFrame, features: pl.DataFrame, raw: np.ndarray | None = None) -> pl.DataFrame:
        """The model's verdict per turn, before rules: ids, `model_failure_point`, `confidence`, `probabilities`.
        `raw`: the model's raw scores of the turns, when already computed."""
        probabilities = self.model.predict_proba(features, raw)
        if self.profile is not None and not self.profile.adapted:
            probabilities = self.profile.adjust(probabilities, self.model.classes_)
        probabilities = np.round(probabilities, PROBABILITY_DIGITS)
        predicted = pl.Series("model_failure_point", np.asarray(self.model.classes_)[probabilities.argmax(axis=1)],
                              dtype=pl.String)
        by_label = pl.DataFrame(probabilities, schema=list(self.model.classes_), orient="row").select(LABELS)
        return turns.select("turn_id", "session_id", "turn_index").with_columns(
            model_failure_point=predicted, confidence=pl.Series(probabilities.max(axis=1)),
            probabilities=by_label.to_struct())

    def run(self, turns: pl.DataFrame, *, features: pl.DataFrame | None = None, fitted: Reference | None = None,
            heard: HeardScores | None = None, on_step: Callable[[str], None] | None = None,
            on_explained: Progress | None = None) -> Batch:
        """Classify one batch of whole sessions. `fitted`: quantile tables fitted on the whole input when
        this batch is one of several (else fitted on the batch); `heard`: the raw scores of the turns the run
        heard (`fpi.engines.whole_input.hear`), by `line`, not predicted again. `on_step` hears each step's name as it
        starts; `on_explained` (turns explained so far, turns to explain), chunk by chunk."""
        step = on_step or (lambda name: None)
        step("preparing")  # compiling the model's trees for a large run takes seconds: say so
        self.expect(turns.height)
        step("features")
        neighbours = neighbour_rows(turns)
        features = features if features is not None else build_features(turns, neighbours, reference=self.base.reference_,
                                                                         fitted=fitted)
        step("predicting")
        raw = self._hear_whole(features, turns["session_id"]) if fitted is None else self._reused(turns, features, heard)
        verdicts = self.verdicts(turns, features, raw)
        step("rules")
        matches = rule_matches(evaluation_frame(turns, features, verdicts, neighbours), self.rules)
        decided = decide(matches, self.rules, verdicts["model_failure_point"])
        records = verdicts.select("turn_id", "session_id", "turn_index").with_columns(
            decided["failure_point"], verdicts["model_failure_point"], verdicts["confidence"], verdicts["probabilities"],
            decided["rule"], decided["rules_matched"], decided["recovered_from"],
            *turns.select(**CONTEXT_COLUMNS).get_columns())
        if self.explain_top_k:
            step("explaining")
            records = records.with_columns(explanations(records, features, self.model, top_k=self.explain_top_k,
                                                        explain_all=self.explain_all, on_progress=on_explained))
        if "label" in turns.columns and turns["label"].null_count() < turns.height:
            records = records.with_columns(turns["label"])
        records = records.with_columns(model_sha=pl.lit(self.model_sha), rules_sha=pl.lit(self.rules_sha, pl.String),
                                       shift=pl.lit(self.profile.shift if self.profile else None, pl.Float64))
        return Batch(turns, neighbours, features, verdicts, matches, in_contract_order(records))


def classify(turns: Source, model: FailurePointModel | None = None,
             rules: RuleSet | Literal["default"] | None = "default", *,
             features: pl.DataFrame | None = None, explain_top_k: int | None = None,
             explain_all: bool = False, on_explained: Progress | None = None,
             mapping: Mapping | dict | str | Path | None = None) -> pl.DataFrame:
    """One record per input turn, in input order (the records-v1 contract, `fpi.contract.records`):
    ids, `failure_point` (final), `model_failure_point`, `confidence`, `probabilities`, `rule`,
    `rules_matched`, `recovered_from`, the context reports slice by, `explanation` with
    `explain_top_k`, and the gold `label` when present. `rules=None` runs the model alone. `turns` are
    loaded turns, or anything `fpi.load_traces` reads (a path, a pandas DataFrame, an Arrow table, ...),
    read through `mapping` when given."""
    if mapping is not None or not (isinstance(turns, pl.DataFrame) and set(TURN_SCHEMA) <= set(turns.columns)):
        turns = load_traces(turns, mapping=mapping)
    pipeline = Pipeline(model, rules, explain_top_k=explain_top_k, explain_all=explain_all)
    return pipeline.run(turns, features=features, on_explained=on_explained).records
