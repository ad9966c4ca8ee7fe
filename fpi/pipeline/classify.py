"""How a turn becomes a verdict: one object runs a batch of whole sessions through
features → model → rules → explain, once, and keeps what each step computed.

A batch must hold every turn of its sessions (dialogue features look at the next and
previous turn). The whole input is one batch in memory; a streamed run or a Spark task
hands the same pipeline one partition of sessions at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from fpi.pipeline.explain import explanations
from fpi.pipeline.features import build_features, neighbour_rows
from fpi.io.traces import Source, load_traces
from fpi.io.mapping import Mapping
from fpi.contract.errors import ModelError
from fpi.pipeline.model import FailurePointModel
from fpi.pipeline.predictor import Predictor
from fpi.pipeline.quantiles import Reference
from fpi.contract.records import CONTEXT_COLUMNS, SHA_DIGITS, in_contract_order
from fpi.pipeline.rules import RuleSet, decide, evaluation_frame, load_rules, rule_matches
from fpi.contract.trace_format import LABELS, TURN_SCHEMA

PROBABILITY_DIGITS = 6

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
    and machine), `"lightgbm"` with LightGBM, `"auto"` compiles for runs of `COMPILE_FROM` turns or more (`fpi.pipeline.predictor`);
    the records are the same whichever predicts."""

    def __init__(self, model: FailurePointModel | None = None, rules: RuleSet | Literal["default"] | None = "default", *,
                 explain_top_k: int | None = None, explain_all: bool = False, predictor: Predictor | str = Predictor.auto):
        self.model = model if model is not None else FailurePointModel.load()
        self.rules = load_rules() if rules == "default" else rules or RuleSet(())
        self.explain_top_k = explain_top_k
        self.explain_all = explain_all
        self.model_sha = self.model.fingerprint()[:SHA_DIGITS]
        self.rules_sha = self.rules.identity()["fingerprint"][:SHA_DIGITS] if len(self.rules) else None
        self.predictor = Predictor(predictor)
        self._expected = 0

    def expect(self, turns: int) -> None:
        """Hear how many turns the whole run holds (an engine that hands over batches knows it first),
        so `predictor="auto"` can choose for the run, not the batch."""
        self._expected = max(self._expected, turns)
        if self.predictor.compiles(self._expected) and self.model.native_ is None:
            try:
                self.model.compile()
            except ModelError:
                if self.predictor is Predictor.native:
                    raise
                self.predictor = Predictor.lightgbm  # auto: LightGBM predicts the same records, only slower

    def verdicts(self, turns: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
        """The model's verdict per turn, before rules: ids, `model_failure_point`, `confidence`, `probabilities`."""
        probabilities = np.round(self.model.predict_proba(features), PROBABILITY_DIGITS)
        predicted = pl.Series("model_failure_point", np.asarray(self.model.classes_)[probabilities.argmax(axis=1)],
                              dtype=pl.String)
        by_label = pl.DataFrame(probabilities, schema=list(self.model.classes_), orient="row").select(LABELS)
        return turns.select("turn_id", "session_id", "turn_index").with_columns(
            model_failure_point=predicted, confidence=pl.Series(probabilities.max(axis=1)),
            probabilities=by_label.to_struct())

    def run(self, turns: pl.DataFrame, *, features: pl.DataFrame | None = None, fitted: Reference | None = None,
            on_step: Callable[[str], None] | None = None, on_explained: Progress | None = None) -> Batch:
        """Classify one batch of whole sessions. `fitted`: quantile tables fitted on the whole input when
        this batch is one of several (else fitted on the batch). `on_step` hears each step's name as it
        starts; `on_explained` (turns explained so far, turns to explain), chunk by chunk."""
        step = on_step or (lambda name: None)
        self.expect(turns.height)
        step("features")
        neighbours = neighbour_rows(turns)
        features = features if features is not None else build_features(turns, neighbours, reference=self.model.reference_,
                                                                         fitted=fitted)
        step("predicting")
        verdicts = self.verdicts(turns, features)
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
        records = records.with_columns(model_sha=pl.lit(self.model_sha), rules_sha=pl.lit(self.rules_sha, pl.String))
        return Batch(turns, neighbours, features, verdicts, matches, in_contract_order(records))


def classify(turns: Source, model: FailurePointModel | None = None,
             rules: RuleSet | Literal["default"] | None = "default", *,
             features: pl.DataFrame | None = None, explain_top_k: int | None = None,
             explain_all: bool = False, on_explained: Progress | None = None,
             mapping: Mapping | str | Path | None = None) -> pl.DataFrame:
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
