"""Which turns to label: a few hundred that cover the logs.

A model fitted to other logs is a poor judge of which turns would teach it most on these: its doubt
is biased. Turns picked by the shipped model's doubt taught less than turns picked at random, on a
real telephone system's logs and on simulated assistants alike (docs/learning.md). So the sheet is
drawn at random within strata of the logs (the model's guess, and which third of these logs the
turn's weakest confidence sits in), each stratum in proportion to its turns but every guess given
room, and one turn per session while sessions last: as random as random sessions, spread wider.
Same traces, model and seed: the same sheet."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from fpi.pipeline.classify import Batch

LEVELS = ("low", "middle", "high")  # thirds of the weakest stage's confidence among these logs

c = pl.col


def _strata(batch: Batch, seed: int) -> pl.DataFrame:
    """Each turn's row, session, stratum (the model's guess, its weakest confidence's third) and random draw."""
    weakest = batch.features["weakest_stage_q"].fill_null(0.5).to_numpy()
    return pl.DataFrame({
        "row": np.arange(batch.records.height), "jitter": np.random.default_rng(seed).random(batch.records.height),
        "session": batch.records["session_id"], "predicted": batch.records["model_failure_point"],
        "level": np.asarray(LEVELS)[np.minimum((weakest * 3).astype(int), 2)]})


def choose(batch: Batch, n: int, *, seed: int = 0) -> pl.DataFrame:
    """Row numbers of the `n` turns to label and why each was chosen, in session order: drawn at random within
    strata, from one turn drawn per session (more only when sessions run out), each stratum in proportion to
    its turns, each guess at least its share of half the sheet."""
    drawn = _strata(batch, seed).sort("jitter").with_columns(repeat=pl.int_range(pl.len()).over("session"))
    n = min(n, drawn.height)
    if n == 0:
        return drawn.clear().select("row", why=pl.lit("", pl.String))
    firsts = drawn.filter(c("repeat") == 0)  # each session's first draw
    strata = firsts.group_by("predicted", "level").agg(turns=pl.len())
    floor = math.ceil(n / 2 / strata["predicted"].n_unique())  # the least each guess gets, where it has the turns
    quota = (strata.with_columns(guess_turns=c("turns").sum().over("predicted"))
             .with_columns(want=pl.max_horizontal(c("turns") / firsts.height * n, floor * c("turns") / c("guess_turns")))
             .with_columns(quota=(c("want") * n / c("want").sum()).round().cast(pl.Int64))
             .select("predicted", "level", "quota"))
    within = (firsts.with_columns(place=pl.int_range(pl.len()).over("predicted", "level"))
              .join(quota, on=["predicted", "level"]).filter(c("place") < c("quota")).drop("place", "quota"))
    rest = drawn.join(within.select("row"), on="row", how="anti").sort("repeat", "jitter")  # rounding, small strata
    picked = pl.concat([within, rest.head(max(n - within.height, 0))]).head(n)
    return picked.select("row", why=pl.format("drawn at random among the turns the model calls {} with a {} weakest "
                                              "confidence", "predicted", "level")).sort("row")


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
            .select(pl.exclude("row", "why"), "why", label=pl.lit("", pl.String)))
