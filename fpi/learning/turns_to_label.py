"""Which turns to label: the few hundred whose labels would teach the model most.

A turn is worth a label when the model is unsure (a small margin between its two likeliest
failure points) or when the user's reaction disagrees with it (a rephrase after a turn it
calls correct, a clean continuation after one it calls failed). The choice is spread over
predicted failure points, intents and sessions, so a few hundred labels cover the ground.
Same traces, model and seed: the same sheet."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import polars as pl

from fpi.pipeline.classify import Batch
from fpi.contract.trace_format import LABELS
from fpi.learning.weak_labels import signals

DISAGREEMENT_BONUS = 0.5
INTENT_DECAY = 0.85  # each further turn of an intent already chosen counts this much less
POOL = 20  # candidates looked at per turn asked for

c = pl.col


def _scores(batch: Batch) -> pl.DataFrame:
    probabilities = batch.records["probabilities"].struct.unnest().select(LABELS).to_numpy()
    ordered = np.sort(probabilities, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    reactions = signals(batch.features)
    failure = (batch.records["model_failure_point"] != "correct").to_numpy()
    failed, clean = reactions["something_failed"].to_numpy(), reactions["clean"].to_numpy()
    disagrees = (failed & ~failure) | (clean & failure)
    why = np.where(disagrees & ~failure, "the user reacted as if it failed; the model says correct",
                   np.where(disagrees, "the user carried on cleanly; the model says it failed",
                            "the model is unsure between its two likeliest failure points"))
    return pl.DataFrame({"row": np.arange(len(margin)), "score": (1 - margin) + DISAGREEMENT_BONUS * disagrees,
                         "margin": margin, "why": why})


def choose(batch: Batch, n: int, *, seed: int = 0) -> pl.DataFrame:
    """Row numbers of the `n` turns to label and why each was chosen, in session order."""
    scored = _scores(batch).with_columns(
        jitter=pl.Series(np.random.default_rng(seed).random(batch.records.height)),
        predicted=batch.records["model_failure_point"], session=batch.records["session_id"],
        intent=batch.records["intent"].fill_null(""))
    pool = scored.sort(["score", "jitter"], descending=[True, True]).head(max(POOL * n, n))
    labels_present = pool["predicted"].unique().sort().to_list()
    per_label = math.ceil(n / 2 / max(len(labels_present), 1))  # half the sheet spread over predicted labels
    chosen: list[int] = []
    sessions: set[str] = set()
    intents: Counter[str] = Counter()
    by_label: Counter[str] = Counter()
    rows = pool.select("row", "score", "predicted", "session", "intent").rows()
    for strict in (2, 1, 0):  # one turn per session within label quotas; then per session; then by score alone
        taken = set(chosen)
        candidates = sorted((score * INTENT_DECAY ** intents[intent], -row, row, label, session, intent)
                            for row, score, label, session, intent in rows if row not in taken)
        for _, _, row, label, session, intent in reversed(candidates):
            if len(chosen) >= n:
                break
            if (strict >= 1 and session in sessions) or (strict == 2 and by_label[label] >= per_label):
                continue
            chosen.append(row)
            sessions.add(session)
            intents[intent] += 1
            by_label[label] += 1
    picked = pl.DataFrame({"row": chosen}, schema={"row": pl.Int64})
    return picked.join(scored.select("row", "why", "margin"), on="row", how="left").sort("row")


def sheet(batch: Batch, picked: pl.DataFrame) -> pl.DataFrame:
    """A labeling sheet: what each chosen turn and its neighbours said and did, the model's guess,
    and an empty `label` column for a person to fill."""
    turns = pl.concat([batch.turns, batch.neighbours], how="horizontal").with_row_index("row").cast({"row": pl.Int64})
    text = c("asr").struct.field("text")
    nbest = c("asr").struct.field("nbest").list.eval(pl.element().struct.field("text")).list.slice(1).list.join(" | ")
    slots = c("nlu").struct.field("slots").list.eval(
        pl.element().struct.field("name") + "=" + pl.element().struct.field("value")).list.join("; ")
    entities = c("er").struct.field("entities").list.eval(
        pl.element().struct.field("value").fill_null("?") + " -> " + pl.element().struct.field("resolved_value").fill_null("(none)")
        + " (" + pl.element().struct.field("status") + ")").list.join("; ")
    result = c("result").struct.field("status") + pl.when(c("result").struct.field("response").is_not_null()).then(
        ": " + c("result").struct.field("response")).otherwise(pl.lit(""))
    described = turns.select(
        "row", "turn_id", "session_id", "turn_index",
        previous_text=text.gather(c("_prev_row")), text=text, asr_confidence=c("asr").struct.field("confidence"),
        alternatives=nbest, intent=pl.concat_str(c("nlu").struct.field("domain"), c("nlu").struct.field("intent"),
                                                 separator="/", ignore_nulls=True),
        nlu_confidence=c("nlu").struct.field("confidence"), slots=slots, entities=entities, result=result,
        next_text=text.gather(c("_next_row")))
    guesses = (batch.records.select(model_guess="model_failure_point", model_confidence="confidence")
               .with_row_index("row").cast({"row": pl.Int64}))
    return (picked.join(described, on="row").join(guesses, on="row")
            .select(pl.exclude("row", "why", "margin"), "why", label=pl.lit("", pl.String)))
