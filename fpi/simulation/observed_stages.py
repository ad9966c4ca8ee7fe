"""What the logs of a simulated turn show: each stage's observable fields (wake score, what ASR heard
and its n-best, NLU's intent, slots and n-best, ER's entities, the result), drawn from the turn's
hidden outcome with the noise, calibration and vocabulary of the assistant's profile."""

from __future__ import annotations

import numpy as np
import polars as pl

from fpi.contract.trace_format import RESULT_STATUSES
from fpi.simulation.profiles import Profile, opaque_name
from fpi.simulation.utterance_bank import AFFIRM, BACKGROUND, CORRECTIONS, Bank

DEVICE_VERIFIES_WAKE = np.array([True, True, True, False, True])


def beta(rng: np.random.Generator, a: np.ndarray | float, b: np.ndarray | float, n: int) -> np.ndarray:
    return rng.beta(np.broadcast_to(a, n), np.broadcast_to(b, n))


RESPONSES = {
    "success": "Okay.", "partial": "I could only do part of that.",
    "fallback": "Sorry, I don't know that one.", "unsupported": "Sorry, I can't do that yet.",
    "error": "Sorry, something went wrong.",
}


def stage_columns(rng: np.random.Generator, bank: Bank, t: dict[str, np.ndarray], profile: Profile) -> pl.DataFrame:
    """Observable trace fields for each simulated turn, as trace-format struct columns."""
    n = t["utterance"].size
    fields = {"row": np.arange(n), "fw": t["false_wake"], "answer": t["answer"], **_wake(rng, t, profile, n),
              **_asr(rng, bank, t, profile, n)}
    nlu = _nlu(rng, bank, t, profile, n)
    status, latency = _result(rng, t, profile, n)
    frame = pl.DataFrame({**fields, **nlu, "status": pl.Series(RESULT_STATUSES).gather(status), "latency_ms": np.round(latency, 1),
                          "er_kind": t["er_kind"]})
    frame = _in_words(rng, bank, frame, t, profile)
    slots, entities = _slots_and_entities(rng, bank, frame, profile)
    return _as_stages(frame.join(slots, on="row", how="left").join(entities, on="row", how="left").sort("row"), profile)


def _wake(rng: np.random.Generator, t: dict[str, np.ndarray], profile: Profile, n: int) -> dict[str, np.ndarray]:
    fw = t["false_wake"]
    verifies = DEVICE_VERIFIES_WAKE[t["device"]]
    verified = np.where(fw, rng.random(n) < 0.35, rng.random(n) < 0.97)
    wake_score = profile.wake_calibration.apply(np.where(fw, beta(rng, 4, 4, n), beta(rng, 9, 2, n)), rng)
    return {"verifies": verifies, "verified": verified, "wake_score": wake_score}


def _asr(rng: np.random.Generator, bank: Bank, t: dict[str, np.ndarray], profile: Profile, n: int) -> dict[str, np.ndarray]:
    """What ASR heard, as indices into bank.texts (words later), its confidence and its n-best."""
    u, asr_kind, fw, answer = t["utterance"], t["asr_kind"], t["false_wake"], t["answer"]
    sibling = bank.by_intent[u]
    silent = rng.random(n) < 0.3  # many false wakes catch no speech at all
    background = bank.background_at + np.where(silent, 0, 1 + rng.integers(len(BACKGROUND) - 1, size=n))
    kinds = [answer, fw, asr_kind == 1, asr_kind == 2, asr_kind == 3]
    asr_text = np.select(kinds, [t["answer_text"], background, bank.minor_at + u, bank.entity_at + u, bank.major_at + u], u)
    shape_a = np.select(kinds, [12.0, 2.0, 9.0, 6.0, 3.0], 12.0)
    shape_b = np.select(kinds, [2.0, 5.0, 3.0, 3.5, 4.0], 2.2)
    asr_confidence = profile.asr_calibration.apply(rng.beta(shape_a, shape_b) * (1 - 0.04 * t["noise"]), rng)
    truth = rng.random(n) < 0.5
    alt1 = np.select([answer | fw, asr_kind == 0, asr_kind == 3, asr_kind == 1],
                     [bank.background_at + rng.integers(len(BACKGROUND) + len(AFFIRM), size=n), bank.minor_at + u,
                      bank.major_at + sibling, np.where(truth, u, bank.major_at + sibling)],
                     np.where(truth, u, bank.minor_at + u))
    alt2 = np.select([answer | fw, (asr_kind == 0) | ~bank.has_entity[u] | (asr_kind == 2)],
                     [bank.background_at + rng.integers(len(BACKGROUND), size=n), bank.major_at + u], bank.entity_at + u)
    close = (asr_kind > 0) | fw
    c2 = asr_confidence * np.where(close, rng.uniform(0.6, 1.0, n), rng.uniform(0.15, 0.8, n))
    c3 = c2 * rng.uniform(0.3, 0.9, n)
    nbest_size = rng.choice(len(profile.asr_nbest), size=n, p=profile.asr_nbest)
    asr_empty = fw & (asr_text == bank.background_at)  # the first background entry is silence
    return {"asr_empty": asr_empty, "asr_text": asr_text, "asr_confidence": asr_confidence, "alt1": alt1, "alt2": alt2,
            "c2": c2, "c3": c3, "nbest_size": nbest_size}


def _nlu(rng: np.random.Generator, bank: Bank, t: dict[str, np.ndarray], profile: Profile, n: int) -> dict[str, np.ndarray]:
    """NLU's intent and domain (codes into bank.intents, bank.domains), its confidence, n-best and slot list."""
    u, asr_kind, fw, answer = t["utterance"], t["asr_kind"], t["false_wake"], t["answer"]
    wrong_intent = t["nlu_wrong"] & (t["nlu_error_kind"] != 3)
    heard = np.where(wrong_intent | fw, t["decoy"], u)
    n_intents = bank.intents.len() - 2
    intent = np.where(answer, np.where(t["answer_fixed"], n_intents, n_intents + 1), bank.intent_code[heard])
    domain = np.where(answer, bank.domains.len() - 1, bank.domain_code[heard])
    second = np.where(wrong_intent, bank.intent_code[u], bank.intent_code[t["decoy"]])
    second = np.where(second == intent, bank.intent_code[rng.integers(bank.size, size=n)], second)
    second_domain = np.where(wrong_intent, bank.domain_code[u], bank.domain_code[t["decoy"]])
    slot_error = t["nlu_wrong"] & (t["nlu_error_kind"] == 3)
    nlu_confidence = np.select([answer, fw, wrong_intent, slot_error],
                               [beta(rng, 12, 2, n), beta(rng, 2.5, 4, n), beta(rng, 4, 3.5, n), beta(rng, 7, 3, n)],
                               beta(rng, 10, 2, n))
    nlu_confidence = profile.nlu_calibration.apply(nlu_confidence, rng)
    nlu_c2 = nlu_confidence * np.where(wrong_intent | t["clarify"], rng.uniform(0.6, 1.0, n), rng.uniform(0.05, 0.6, n))
    nlu_nbest_size = rng.choice(len(profile.nlu_nbest), size=n, p=profile.nlu_nbest)
    slot_variant = np.select([answer | (fw & (rng.random(n) < 0.7)), slot_error, asr_kind == 2], [-1, 2, 1], 0)
    slot_index = np.where(slot_variant < 0, -1, 3 * heard + np.maximum(slot_variant, 0))
    return {"intent": intent, "domain": domain, "nlu_confidence": nlu_confidence, "second": second,
            "second_domain": second_domain, "nlu_c2": nlu_c2, "nlu_nbest_size": nlu_nbest_size, "slot_index": slot_index}


def _result(rng: np.random.Generator, t: dict[str, np.ndarray], profile: Profile, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The result status as the assistant logs it, and the latency."""
    status = t["status"]
    if profile.statuses:
        logged = np.array([RESULT_STATUSES.index(profile.statuses.get(s, s)) for s in RESULT_STATUSES])
        status = logged[status]
    latency = np.exp(rng.normal(6.3, 0.45, n))
    latency = np.where((status == 5) & (rng.random(n) < 0.3), 8000 + rng.exponential(1500, n), latency)
    return status, latency


def _in_words(rng: np.random.Generator, bank: Bank, frame: pl.DataFrame, t: dict[str, np.ndarray], profile: Profile) -> pl.DataFrame:
    """Indices into texts, intents and domains as the words the logs show (a user's correction said aloud, the
    assistant's own names for its intents)."""
    n = frame.height
    texts, intents, domains = bank.texts, bank.intents, bank.domains
    spoken = texts.gather(frame["asr_text"])
    if profile.corrections:
        corrects = t["rephrase"] & (rng.random(n) < profile.corrections)
        opening = pl.Series(CORRECTIONS).gather(rng.integers(len(CORRECTIONS), size=n))
        spoken = pl.select(pl.when(pl.Series(corrects)).then(opening + spoken).otherwise(spoken)).to_series()
    if profile.rename_vocabulary:
        salt = profile.rename_vocabulary
        intents = intents.map_elements(lambda name: opaque_name(salt, name), return_dtype=pl.String)
        domains = domains.map_elements(lambda name: opaque_name(salt, name), return_dtype=pl.String)
    return frame.with_columns(
        asr_text=spoken, alt1=texts.gather(frame["alt1"]), alt2=texts.gather(frame["alt2"]), intent=intents.gather(frame["intent"]),
        domain=domains.gather(frame["domain"]), second=intents.gather(frame["second"]),
        second_domain=domains.gather(frame["second_domain"]))


def _as_stages(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """The observed fields as trace format v1's stage structs."""
    c = pl.col
    ran = c("status") != "none"
    response = (pl.when(c("status") == "clarify").then(pl.format("Did you mean {} or {}?", c("intent"), c("second")))
                .otherwise(c("status").replace_strict(RESPONSES, default=None)))
    return frame.select(
        wake=pl.when(c("answer") | (not profile.wake)).then(None).otherwise(pl.struct(
            detected=pl.lit(True), score=c("wake_score").round(4),
            verified=pl.when(c("verifies")).then(c("verified")).otherwise(None))),
        asr=pl.struct(text=c("asr_text"), confidence=c("asr_confidence").round(4),
                      nbest=pl.when(c("nbest_size") == 0).then(None).otherwise(pl.concat_list(
                          pl.struct(text=c("asr_text"), confidence=c("asr_confidence").round(4)),
                          pl.struct(text=c("alt1"), confidence=c("c2").round(4)),
                          pl.struct(text=c("alt2"), confidence=c("c3").round(4))).list.head(c("nbest_size")))),
        nlu=pl.when(c("asr_empty")).then(None).otherwise(pl.struct(
            domain=c("domain"), intent=c("intent"), confidence=c("nlu_confidence").round(4),
            slots=c("slots").fill_null(pl.lit([], dtype=pl.List(pl.Struct({"name": pl.String, "value": pl.String, "confidence": pl.Float64})))),
            nbest=pl.when(c("nlu_nbest_size") == 0).then(None).otherwise(pl.concat_list(
                pl.struct(domain=c("domain"), intent=c("intent"), confidence=c("nlu_confidence").round(4)),
                pl.struct(domain=c("second_domain"), intent=c("second"), confidence=c("nlu_c2").round(4)),
            ).list.head(c("nlu_nbest_size"))))),
        er=pl.when(c("entities").is_null() | c("asr_empty") | (not profile.er)).then(None).otherwise(pl.struct(entities=c("entities"))),
        result=pl.struct(status=c("status"),
                         action=pl.when(c("status").is_in(["success", "partial"])).then(c("intent")).otherwise(None),
                         response=pl.when(ran).then(response).otherwise(None),
                         latency_ms=pl.when(ran).then(c("latency_ms")).otherwise(None)),
    )


def without_scores(stages: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Blank the confidences an assistant does not log (everywhere they appear: n-best, slots, entities)."""
    c = pl.col

    def blank(items: pl.Expr, member: str) -> pl.Expr:
        return items.list.eval(pl.element().struct.with_fields(pl.lit(None, pl.Float64).alias(member)))

    changes = []
    if "wake" not in profile.scores:
        changes.append(c("wake").struct.with_fields(score=pl.lit(None, pl.Float64)).alias("wake"))
    if "asr" not in profile.scores:
        changes.append(c("asr").struct.with_fields(confidence=pl.lit(None, pl.Float64),
                                                   nbest=blank(pl.field("nbest"), "confidence")).alias("asr"))
    if "nlu" not in profile.scores:
        changes.append(c("nlu").struct.with_fields(confidence=pl.lit(None, pl.Float64), nbest=blank(pl.field("nbest"), "confidence"),
                                                   slots=blank(pl.field("slots"), "confidence")).alias("nlu"))
    if "er" not in profile.scores:
        changes.append(c("er").struct.with_fields(entities=blank(pl.field("entities"), "score")).alias("er"))
    # with_fields on a null struct gives a struct of nulls: keep a stage that did not run absent
    return stages.with_columns(pl.when(c(e.meta.output_name()).is_not_null()).then(e) for e in changes) if changes else stages


def _slots_and_entities(rng: np.random.Generator, bank: Bank, frame: pl.DataFrame,
                        profile: Profile) -> tuple[pl.DataFrame, pl.DataFrame]:
    """NLU slot lists and ER entity lists; the first resolvable entity carries the turn's ER outcome."""
    has_slots = frame.filter(pl.col("slot_index") >= 0)
    exploded = (has_slots.select("row", "er_kind", slots=bank.slots.gather(has_slots["slot_index"].cast(pl.Int64)))
                .explode("slots").drop_nulls("slots").unnest("slots")
                .with_columns(target=pl.col("resolvable") & (pl.col("resolvable").cast(pl.Int32).cum_sum().over("row") == 1)))
    m = exploded.height
    kind = np.where(exploded["target"].to_numpy(), exploded["er_kind"].to_numpy(), 1)
    score = np.select([kind == 2, kind == 3, kind == 4, kind == 5],
                      [beta(rng, 5, 2.5, m), beta(rng, 1.5, 6, m), beta(rng, 5, 3, m), beta(rng, 4, 4, m)],
                      beta(rng, 9, 1.8, m))
    score = profile.er_calibration.apply(score, rng)
    misheard = exploded["value"].to_numpy() != exploded["canonical"].to_numpy()
    slot_confidence = profile.nlu_calibration.apply(np.where(misheard, beta(rng, 5, 3, m), beta(rng, 8, 2, m)), rng)
    exploded = exploded.with_columns(kind=pl.Series(kind), score=pl.Series(score).round(4),
                                     slot_confidence=pl.Series(slot_confidence).round(4))
    c = pl.col
    resolved = c("kind").is_in([0, 1, 2])
    slots = exploded.group_by("row", maintain_order=True).agg(
        slots=pl.struct(name=c("name"), value=c("value"), confidence=c("slot_confidence")))
    entities = exploded.filter(c("resolvable")).group_by("row", maintain_order=True).agg(entities=pl.struct(
        slot=c("name"), value=c("value"),
        resolved_id=pl.when(resolved).then(c("entity_id")).when(c("kind") == 4).then(c("decoy_id")).otherwise(None),
        resolved_value=pl.when(resolved).then(c("canonical")).when(c("kind") == 4).then(c("decoy_value")).otherwise(None),
        score=c("score"),
        status=pl.when(c("kind") == 3).then(pl.lit("unresolved")).when(c("kind") == 5).then(pl.lit("ambiguous")).otherwise(pl.lit("resolved")),
    ))
    return slots, entities
