"""Per-turn features: each stage's confidence and decisions, agreement between
stages, and what the user did next in the session.

Every feature is a named polars expression over the loaded trace columns plus
a few helper columns; the pipeline is lazy and collects once. A stage that did
not run gives nulls, never zeros, so the model can tell "absent" from "low"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from fpi.contract.trace_format import with_every_member
from fpi.pipeline import quantiles

c = pl.col
CORRECTION = r"^(no|nope|not|wrong|i said|i meant|that's not|that is not)\b"
REPROMPTS = (  # what a voice agent says when it did not hear the user: compared with its reply, lower-cased
    "sorry, i didn't catch that", "i didn't catch that", "could you repeat that", "can you say that again",
    "i didn't quite get that", "sorry, what was that", "i didn't hear you",
    "perdona, no te he entendido", "¿puedes repetirlo?", "pardon, je n'ai pas compris", "pouvez-vous répéter ?",
    "entschuldigung, das habe ich nicht verstanden", "können sie das wiederholen?", "scusa, non ho capito",
    "desculpe, não entendi", "sorry, dat heb ik niet verstaan",
)


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    expr: pl.Expr
    categorical: bool = False
    group: str = ""


def _flag(condition: pl.Expr) -> pl.Expr:
    return condition.cast(pl.Float64)


def _nbest_margin(nbest: pl.Expr) -> pl.Expr:
    """Top confidence minus the runner-up's; null with fewer than two hypotheses."""
    confidences = nbest.list.eval(pl.element().struct.field("confidence"))
    return pl.when(nbest.list.len() >= 2).then(confidences.list.get(0, null_on_oob=True) - confidences.list.get(1, null_on_oob=True))


def _nbest_entropy(nbest: pl.Expr) -> pl.Expr:
    """Entropy (nats) of the n-best confidences: how widely the stage spread its bets; null without an n-best."""
    p = nbest.list.eval(pl.element().struct.field("confidence").clip(1e-9, 1.0))
    return pl.when(nbest.list.len() > 0).then(-p.list.eval(pl.element() * pl.element().log()).list.sum())


def _similarity(pair: pl.Series) -> pl.Series:
    """Normalised Levenshtein similarity (0..1) of two string fields; null where either is null. Only the pairs
    with both are handed to rapidfuzz: the strings' conversion to Python costs as much as the scoring."""
    a, b = pair.struct.field("a"), pair.struct.field("b")
    both = a.is_not_null() & b.is_not_null()
    scores = np.full(len(pair), np.nan, dtype=np.float32)
    scores[both.to_numpy()] = process.cpdist(a.filter(both).to_list(), b.filter(both).to_list(), scorer=fuzz.ratio, dtype=np.float32,
                                             workers=-1) / 100.0  # pair by pair: the same scores on any number of cores
    return pl.Series(scores).fill_nan(None).cast(pl.Float64)


def _reprompt_similarity(replies: pl.Series) -> pl.Series:
    """Highest similarity (0..1) of each reply to a reprompt (the best-matching stretch of the longer text);
    null for no reply or one under four characters. Each distinct reply is read and scored once: most are templates."""
    distinct = replies.drop_nulls().unique()
    text = distinct.str.to_lowercase().str.strip_chars(" .!")
    scored = text.str.len_chars() >= 4
    scores = process.cdist(text.filter(scored).to_list(), list(REPROMPTS), scorer=fuzz.partial_ratio, dtype=np.float32,
                           workers=1).max(axis=1, initial=0.0) / 100.0 if scored.any() else np.zeros(0)
    return replies.replace_strict(distinct.filter(scored), pl.Series(scores, dtype=pl.Float64), default=None,
                                  return_dtype=pl.Float64)


def similarity(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.struct(a=a, b=b).map_batches(_similarity, return_dtype=pl.Float64)


def neighbour_rows(turns: pl.DataFrame) -> pl.DataFrame:
    """Row numbers of each turn's next and previous turn in its session (by turn_index), or null,
    and the turn's place in its session (`_position`, from 0). One sort serves every dialogue
    feature; each then costs a gather, not a window. Computed eagerly: inside a lazy plan polars'
    common-subexpression pass made this ten times slower."""
    order = turns.select(pl.arg_sort_by("session_id", "turn_index")).to_series().cast(pl.UInt32)
    in_order = pl.DataFrame({"order": order, "session": turns["session_id"].gather(order)})
    row = pl.int_range(pl.len(), dtype=pl.UInt32)
    same_as_previous = c("session").shift(1) == c("session")
    neighbours = in_order.select(
        _next_row=pl.when(c("session").shift(-1) == c("session")).then(c("order").shift(-1)),
        _prev_row=pl.when(same_as_previous).then(c("order").shift(1)),
        _position=row - pl.when(same_as_previous.fill_null(False)).then(None).otherwise(row).forward_fill())
    input_order = np.empty(turns.height, dtype=np.uint32)
    input_order[order.to_numpy()] = np.arange(turns.height, dtype=np.uint32)  # the inverse permutation, without a sort
    return neighbours.select(pl.all().gather(input_order))


def _once_per_distinct(values: pl.Expr, of: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """`of(values)`, computed once per distinct value and spread to the rows holding it: ASR texts repeat
    (commands, templates), and a regex over every row cost twice the look-up."""
    distinct = values.unique(maintain_order=True)  # the same order both times it is read
    return values.replace_strict(distinct, of(distinct), default=None)


def next_of(expr: pl.Expr) -> pl.Expr:
    """`expr` of the next turn in the session (needs the `neighbour_rows` columns)."""
    return expr.gather(c("_next_row"))


def prev_of(expr: pl.Expr) -> pl.Expr:
    return expr.gather(c("_prev_row"))



_TIMESTAMP = c("timestamp").str.replace(" ", "T").str.replace("Z$", "+00:00")
_TIMESTAMP = pl.when(_TIMESTAMP.str.contains(r"[+-]\d{2}:\d{2}$")).then(_TIMESTAMP).otherwise(_TIMESTAMP + "+00:00")
PARSED_TIMESTAMP = _TIMESTAMP.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_zone="UTC", strict=False)
"""Trace timestamps as UTC datetimes (no offset means UTC)."""


_INTENT = c("nlu").struct.field("intent")


def _helpers(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Columns several features share, computed once."""
    asr_text = c("asr").struct.field("text")
    entities = c("er").struct.field("entities")
    return lf.with_columns(
        _row=pl.int_range(pl.len(), dtype=pl.UInt32),
        _ts=PARSED_TIMESTAMP,
        _text=asr_text.str.to_lowercase().str.strip_chars(),
        _intent=_INTENT,
        _status=c("result").struct.field("status"),
        _hypotheses=c("asr").struct.field("nbest").list.eval(pl.element().struct.field("text").str.to_lowercase()),
        _er_status=entities.list.eval(pl.element().struct.field("status")),
        _action=c("result").struct.field("action"),
        _slot_values=c("nlu").struct.field("slots").list.eval(pl.element().struct.field("value").str.to_lowercase()),
    )


def _row_sorted(lf: pl.LazyFrame) -> pl.LazyFrame:
    """`lf` flagged as sorted by `_row`, which it is: the input's row numbers in order, or grouped from an explode of
    them with the groups' order kept. Joins on a sorted key merge instead of hashing."""
    return lf.with_columns(c("_row").set_sorted())


def _with_matches(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Slot values and resolved entities looked up in the ASR text and n-best; one explode per list, of the turns
    whose list has members (filtered before: the others' text is not copied for a row that is dropped)."""
    slots = (lf.select("_row", "_text", value=c("nlu").struct.field("slots")).filter(c("value").list.len() > 0)
             .explode("value").select("_row", "_text", value=c("value").struct.field("value").str.to_lowercase())
             .drop_nulls("value")
             .group_by("_row", maintain_order=True)
             .agg(slots_in_asr_text=c("_text").str.contains(c("value"), literal=True).cast(pl.Float64).mean()))
    weights = c("asr").struct.field("nbest").list.eval(pl.element().struct.field("confidence"))
    held = (lf.filter((c("_slot_values").list.len() > 0) & (c("_hypotheses").list.len() > 0))
            .select("_row", value=c("_slot_values"), text=c("_hypotheses"), weight=weights)
            .explode("value").drop_nulls("value").explode("text", "weight").drop_nulls("weight")
            .group_by("_row", "value", maintain_order=True)
            .agg(share=(c("text").str.contains(c("value"), literal=True).cast(pl.Float64) * c("weight")).sum() / c("weight").sum())
            .group_by("_row", maintain_order=True).agg(slots_in_asr_nbest=c("share").min()))
    alternatives = c("_hypotheses").list.slice(1).list.join(" | ")
    entity = c("entity")
    entities = (lf.select("_row", "_text", "_hypotheses", entity=c("er").struct.field("entities"))
                .filter(entity.list.len() > 0).select("_row", "_text", "entity", alternatives=alternatives).explode("entity")
                .select("_row", "_text", "alternatives", value=entity.struct.field("value").str.to_lowercase(),
                        resolved=entity.struct.field("resolved_value").str.to_lowercase())
                .drop_nulls("resolved")
                .with_columns(similarity=similarity(c("value"), c("resolved")))
                .group_by("_row", maintain_order=True).agg(
                    er_value_similarity_min=c("similarity").min(),
                    er_resolved_in_asr_text=c("_text").str.contains(c("resolved"), literal=True).cast(pl.Float64).mean(),
                    asr_alt_matches_entity=(~c("_text").str.contains(c("resolved"), literal=True)
                                            & c("alternatives").str.contains(c("resolved"), literal=True)).any().cast(pl.Float64)))
    found = (_row_sorted(lf.select("_row"))  # joined on the row alone: a join of the whole frame gathers every column
             .join(_row_sorted(slots), on="_row", how="left", maintain_order="left")
             .join(_row_sorted(held), on="_row", how="left", maintain_order="left")
             .join(_row_sorted(entities), on="_row", how="left", maintain_order="left").drop("_row"))
    return pl.concat([lf, found], how="horizontal")


def _feature_list() -> list[Feature]:
    """Every feature, in the model's order: what each stage logged, then the dialogue around the turn."""
    return _recognition_features() + _resolution_features() + _dialogue_features()


def _recognition_features() -> list[Feature]:
    """What the wake word, speech and language understanding stages logged."""
    wake, asr, nlu = c("wake"), c("asr"), c("nlu")
    asr_nbest, nlu_nbest = asr.struct.field("nbest"), nlu.struct.field("nbest")
    slots = nlu.struct.field("slots")
    slot_confidences = slots.list.eval(pl.element().struct.field("confidence"))
    asr_confidences = asr_nbest.list.eval(pl.element().struct.field("confidence"))
    nlu_runner_up = nlu_nbest.list.get(1, null_on_oob=True)
    F = Feature
    return [
        F("wake_missing", "wake stage did not run (follow-up turn or not logged)", _flag(wake.is_null()), group="wake"),
        F("wake_score", "wake-word detector score", wake.struct.field("score"), group="wake"),
        F("wake_verified", "second-stage wake verification passed (1), failed (0), none (null)", _flag(wake.struct.field("verified")), group="wake"),
        F("asr_missing", "ASR did not run", _flag(asr.is_null()), group="asr"),
        F("asr_confidence", "ASR confidence of the top hypothesis", asr.struct.field("confidence"), group="asr"),
        F("asr_nbest_size", "number of ASR n-best hypotheses", asr_nbest.list.len().cast(pl.Float64), group="asr"),
        F("asr_nbest_margin", "ASR top confidence minus the second hypothesis's", _nbest_margin(asr_nbest), group="asr"),
        F("asr_alt_similarity", "similarity of the top ASR text and the second hypothesis", similarity(c("_text"), c("_hypotheses").list.get(1, null_on_oob=True)), group="asr"),
        F("asr_word_count", "words in the ASR text", c("_words").cast(pl.Float64), group="asr"),
        F("asr_text_empty", "ASR heard no words", _flag(c("_text").str.len_chars() == 0), group="asr"),
        F("asr_nbest_mass", "summed confidence of the ASR n-best (little: the recogniser believed none of them)",
          pl.when(asr_nbest.list.len() > 0).then(asr_confidences.list.sum()), group="asr"),
        F("asr_nbest_entropy", "entropy of the ASR n-best confidences", _nbest_entropy(asr_nbest), group="asr"),
        F("asr_nbest_distinct", "distinct texts in the ASR n-best",
          pl.when(asr_nbest.list.len() > 0).then(asr_nbest.list.eval(pl.element().struct.field("text")).list.n_unique().cast(pl.Float64)),
          group="asr"),
        F("asr_eou_probability", "how sure the turn detector was that the user had finished (low: cut off mid-sentence?)",
          asr.struct.field("eou_probability"), group="asr"),
        F("asr_ttfb_ms", "milliseconds to the STT's first result", asr.struct.field("ttfb_ms"), group="asr"),
        F("nlu_missing", "NLU did not run", _flag(nlu.is_null()), group="nlu"),
        F("nlu_confidence", "NLU confidence of the chosen intent", nlu.struct.field("confidence"), group="nlu"),
        F("nlu_nbest_size", "number of NLU n-best interpretations", nlu_nbest.list.len().cast(pl.Float64), group="nlu"),
        F("nlu_nbest_margin", "NLU top confidence minus the runner-up's", _nbest_margin(nlu_nbest), group="nlu"),
        F("nlu_nbest_entropy", "entropy of the NLU n-best confidences", _nbest_entropy(nlu_nbest), group="nlu"),
        F("nlu_runner_up_intent", "the NLU's second-best intent", nlu_runner_up.struct.field("intent"), categorical=True, group="nlu"),
        F("nlu_runner_up_confidence", "confidence of the NLU's second-best intent", nlu_runner_up.struct.field("confidence"), group="nlu"),
        F("nlu_domain", "NLU domain", nlu.struct.field("domain"), categorical=True, group="nlu"),
        F("nlu_intent", "NLU intent", c("_intent"), categorical=True, group="nlu"),
        F("nlu_slot_count", "number of NLU slots", slots.list.len().cast(pl.Float64), group="nlu"),
        F("nlu_slot_min_confidence", "lowest NLU slot confidence", slot_confidences.list.min(), group="nlu"),
        F("slots_in_asr_text", "share of NLU slot values found verbatim in the ASR text", c("slots_in_asr_text"), group="across"),
        F("slots_in_asr_nbest", "lowest share, weighted by confidence, of the ASR hypotheses that hold a slot value (a value only "
          "the top hypothesis heard is shaky)", c("slots_in_asr_nbest"), group="across"),
    ]


def _resolution_features() -> list[Feature]:
    """What entity resolution and the result logged, the user's feedback and the device."""
    er, result, feedback = c("er"), c("result"), c("feedback")
    entities = er.struct.field("entities")
    scores = entities.list.eval(pl.element().struct.field("score"))
    explicit = feedback.struct.field("explicit")

    def status_count(status: str) -> pl.Expr:
        return pl.when(er.is_not_null()).then(c("_er_status").list.eval(pl.element() == status).list.sum().cast(pl.Float64))

    F = Feature
    return [
        F("er_missing", "entity resolution did not run", _flag(er.is_null()), group="er"),
        F("er_entity_count", "entities sent to resolution", entities.list.len().cast(pl.Float64), group="er"),
        F("er_resolved_count", "entities resolved", status_count("resolved"), group="er"),
        F("er_ambiguous_count", "entities left ambiguous", status_count("ambiguous"), group="er"),
        F("er_unresolved_count", "entities not resolved", status_count("unresolved"), group="er"),
        F("er_min_score", "lowest entity-resolution score", scores.list.min(), group="er"),
        F("er_value_similarity_min", "lowest similarity of a slot value and its resolved value", c("er_value_similarity_min"), group="across"),
        F("er_resolved_in_asr_text", "share of resolved values found verbatim in the ASR text", c("er_resolved_in_asr_text"), group="across"),
        F("asr_alt_matches_entity", "an ASR alternative, not the top, contains a resolved value", c("asr_alt_matches_entity"), group="across"),
        F("result_missing", "no result logged", _flag(result.is_null()), group="result"),
        F("result_status", "result status", c("_status"), categorical=True, group="result"),
        F("result_latency_ms", "result latency in milliseconds", result.struct.field("latency_ms"), group="result"),
        F("result_ttfb_ms", "milliseconds to the LLM's first token (or the reply's first byte)", result.struct.field("ttfb_ms"),
          group="result"),
        F("result_action", "the action taken, by its logged name", c("_action"), categorical=True, group="result"),
        F("result_has_action", "an action was taken", _flag(result.struct.field("action").is_not_null()), group="result"),
        F("result_has_response", "a response was spoken or shown", _flag(result.struct.field("response").is_not_null()), group="result"),
        F("reply_is_reprompt", "the reply asks the user to say it again (similarity 0..1 to a short multilingual list: "
          "\"sorry, I didn't catch that\", \"could you repeat that\" ...)",
          result.struct.field("response").map_batches(_reprompt_similarity, return_dtype=pl.Float64), group="result"),
        F("barge_in", "the user interrupted the response", _flag(feedback.struct.field("barge_in")), group="feedback"),
        F("explicit_negative", "explicit negative feedback", _flag(explicit == "negative"), group="feedback"),
        F("explicit_positive", "explicit positive feedback", _flag(explicit == "positive"), group="feedback"),
        F("device_type", "device type", c("device").struct.field("type"), categorical=True, group="context"),
        F("locale", "locale", c("locale"), categorical=True, group="context"),
    ]


def _dialogue_features() -> list[Feature]:
    asr, feedback = c("asr"), c("feedback")
    session = ("session_id",)
    F = Feature
    return [
        F("position_in_session", "0-based position of the turn in its session", c("_position").cast(pl.Float64), group="dialogue"),
        F("session_length", "turns of the session in the input", pl.len().over(*session).cast(pl.Float64), group="dialogue"),
        F("next_text_similarity", "similarity of this ASR text and the next turn's (a rephrase)", c("_next_similarity"), group="dialogue"),
        F("prev_text_similarity", "similarity of this ASR text and the previous turn's", prev_of(c("_next_similarity")), group="dialogue"),
        F("next_gap_s", "seconds until the next turn of the session", (next_of(c("_ts")) - c("_ts")).dt.total_milliseconds() / 1000.0, group="dialogue"),
        F("prev_gap_s", "seconds since the previous turn of the session", (c("_ts") - prev_of(c("_ts"))).dt.total_milliseconds() / 1000.0, group="dialogue"),
        F("next_same_intent", "the next turn has the same intent", _flag(next_of(c("_intent")) == c("_intent")), group="dialogue"),
        F("prev_same_intent", "the previous turn had the same intent", _flag(prev_of(c("_intent")) == c("_intent")), group="dialogue"),
        F("next_result_status", "result status of the next turn", next_of(c("_status")), categorical=True, group="dialogue"),
        F("next_result_action", "the action of the next turn", next_of(c("_action")), categorical=True, group="dialogue"),
        F("prev_result_action", "the action of the previous turn (what the user is answering)", prev_of(c("_action")),
          categorical=True, group="dialogue"),
        F("next_intent", "NLU intent of the next turn (a denial, a request to repeat, the same request again ...)",
          next_of(c("_intent")), categorical=True, group="dialogue"),
        F("next_nlu_confidence", "NLU confidence of the next turn", next_of(c("nlu").struct.field("confidence")), group="dialogue"),
        F("prev_asr_confidence", "ASR confidence of the previous turn", prev_of(asr.struct.field("confidence")), group="dialogue"),
        F("next_slot_overlap", "share of this turn's slot values the next turn carries again (the user repeating what was missed)",
          pl.when(c("_slot_values").list.len() > 0).then(
              c("_slot_values").list.set_intersection(next_of(c("_slot_values"))).list.len() / c("_slot_values").list.unique().list.len()),
          group="dialogue"),
        F("next_asr_confidence", "ASR confidence of the next turn", next_of(asr.struct.field("confidence")), group="dialogue"),
        F("next_word_count", "words in the next turn's ASR text", next_of(c("_words")).cast(pl.Float64), group="dialogue"),
        F("next_barge_in", "the user interrupted the next turn's response", _flag(next_of(feedback.struct.field("barge_in"))), group="dialogue"),
        F("same_intent_in_session", "other turns of the session with this intent", (pl.len().over(*session, "_intent") - 1).cast(pl.Float64), group="dialogue"),
        F("next_correction", "the next turn opens with a correction (no, i said, not that, ...)",
          _flag(next_of(c("_correction"))), group="words"),
        F("text_is_correction", "this turn opens with a correction: it corrects the previous one",
          _flag(c("_correction")), group="words"),
    ]


FEATURES: tuple[Feature, ...] = tuple(_feature_list())
FEATURE_NAMES: tuple[str, ...] = (*(f.name for f in FEATURES), *quantiles.NAMES)
"""What a model may read: a model trained here reads them all; one trained by an earlier fpi reads those it names."""
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.categorical)
DESCRIPTIONS: dict[str, str] = {**{f.name: f.description for f in FEATURES}, **quantiles.DESCRIPTIONS}


ENGINE: Final = "in-memory"  # the turns are in memory already; polars' streaming engine took a third longer on this plan


def feature_plan(turns: pl.DataFrame, neighbours: pl.DataFrame | None = None) -> pl.LazyFrame:
    """The lazy plan from loaded turns to `turn_id` plus one column per feature, in input order;
    `neighbours` is `neighbour_rows(turns)` when the caller already has it."""
    turns = with_every_member(turns)
    index = neighbours if neighbours is not None else neighbour_rows(turns)
    lf = _with_matches(_helpers(pl.concat([turns, index], how="horizontal").lazy()))
    shared = lf.with_columns(  # in input order, which the neighbours' row numbers point into
        _next_similarity=similarity(c("_text"), next_of(c("_text"))),  # a ratio is symmetric: also the previous turn's
        _words=_once_per_distinct(c("_text"), lambda text: text.str.count_matches(r"\S+")),
        _correction=c("_text").str.contains(CORRECTION))
    return shared.select("turn_id", *[f.expr.alias(f.name) for f in FEATURES])


def build_features(turns: pl.DataFrame, neighbours: pl.DataFrame | None = None, *,
                   reference: quantiles.Reference | None = None, fitted: quantiles.Reference | None = None) -> pl.DataFrame:
    """Features of every turn, in input order: numeric columns as Float64, categorical as String.
    Quantile features are relative to these turns (one assistant's), or to `reference`'s tables
    for a source with too few values here. `fitted`: tables already fitted on the whole input, of
    which these turns are one batch."""
    base = feature_plan(turns, neighbours).collect(engine=ENGINE)
    if fitted is None:  # the sample gathers only what the tables are fitted on
        fitted = quantiles.Reference.fit(quantiles.Reference.sample(base.select(quantiles.FIT_COLUMNS)))
    return fitted.over(reference).apply(base)


def reference_rows(turns: pl.DataFrame) -> pl.DataFrame:
    """What quantile tables are fitted on, per turn: its id, the sources and the intent (row-local,
    so a streamed run collects them part by part, whole sessions or not), from the turn's own fields
    alone: not the whole feature plan, whose matches and similarities they do not read."""
    expressions = {f.name: f.expr for f in FEATURES}
    return (with_every_member(turns).lazy().with_columns(_intent=_INTENT)
            .select("turn_id", *[expressions[name].alias(name) for name in (*quantiles.SOURCES, "nlu_intent")])
            .collect(engine=ENGINE))


def sample_rows(turns: pl.DataFrame) -> pl.DataFrame:
    """What the run hears of the whole input's sample (`Pipeline.fit_logs`), per turn: its id, its session and
    every feature before the quantiles. Dialogue features look at the neighbouring turns: whole sessions only."""
    return feature_plan(turns).collect(engine=ENGINE).with_columns(turns["session_id"])


SAMPLE_COLUMNS: dict[str, type[pl.DataType]] = {
    "turn_id": pl.String, "session_id": pl.String,
    **{f.name: pl.String if f.categorical else pl.Float64 for f in FEATURES}}
"""`sample_rows`' columns and their types."""


def features_markdown() -> str:
    """docs/features.md, generated from the feature list so the two cannot drift."""
    lines = ["# Features", "",
             "Generated from `fpi/pipeline/features.py` (`python -m fpi.pipeline.features > docs/features.md`). A stage that did not run gives null,",
             "never 0. Dialogue features look at the same `session_id`, ordered by `turn_index`. Relative features",
             "(`fpi/pipeline/quantiles.py`) place a score among the turns of the same assistant: fitted on the input being",
             "classified, or on the model's stored tables where the input has fewer than "
             f"{quantiles.MIN_VALUES} values of a score.", "",
             "| feature | group | kind | meaning |", "|---|---|---|---|"]
    for f in FEATURES:
        kind = "categorical" if f.categorical else "numeric"
        lines.append(f"| `{f.name}` | {f.group} | {kind} | {f.description} |")
    for name, description in quantiles.DESCRIPTIONS.items():
        lines.append(f"| `{name}` | relative | numeric | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(features_markdown(), end="")



def frequent_categories(features: pl.DataFrame, names: list[str], at_least: int) -> dict[str, list[str]]:
    """Each categorical feature's values seen on `at_least` turns, sorted: a model's vocabulary (rarer ones read as unknown)."""
    return {name: features[name].drop_nulls().value_counts().filter(pl.col("count") >= at_least)[name].sort().to_list()
            for name in names if name in CATEGORICAL}


def encoded_matrix(features: pl.DataFrame, names: list[str], vocabularies: dict[str, list[str]]) -> np.ndarray:
    """The features `names` as a float matrix, a category coded by its place in its vocabulary (else missing)."""
    columns = [features[name].replace_strict(vocabularies[name], list(range(len(vocabularies[name]))), default=None,
                                             return_dtype=pl.Float64)
               if name in vocabularies else features[name].cast(pl.Float64) for name in names]
    return pl.DataFrame(columns).to_numpy(allow_copy=True).astype(np.float64, copy=False)
