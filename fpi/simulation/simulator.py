"""Labeled traces from a causal model of an assistant and its users.

Each turn draws latent outcomes stage by stage (an ASR error can make NLU or
ER fail, ER can fuzzy-match a misheard name, a clarification can fix an
ambiguity), the label is the first stage whose failure was not recovered,
and users react to what happened. Observed confidences are noisy draws whose
distributions overlap between right and wrong stages, as in real logs.
Vectorised over sessions, one step per turn position."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from fpi.contract.errors import UsageError
from fpi.contract.atomic_files import atomic_write
from fpi.simulation.profiles import Profile, draw_profile, opaque_name, profile_named, with_error_rates
from fpi.contract.trace_format import LABELS, RESULT_STATUSES, STAGES

DEFAULT_ERROR_RATES = {"wake": 0.03, "asr": 0.11, "nlu": 0.07, "er": 0.08, "result": 0.05}
MAX_SESSION_TURNS = 8

DEVICES = ("speaker", "speaker_screen", "tv", "phone", "car")
DEVICE_SHARE = (0.42, 0.2, 0.1, 0.16, 0.12)
DEVICE_HAS_SCREEN = np.array([False, True, True, True, False])
DEVICE_VERIFIES_WAKE = np.array([True, True, True, False, True])
DEVICE_FALSE_WAKE = np.array([1.0, 1.0, 2.5, 0.6, 1.6])
DEVICE_NOISE = np.array([1.0, 1.0, 1.2, 0.9, 1.7])
LOCALES = ("en-US", "en-GB", "en-IN", "en-AU")
LOCALE_SHARE = (0.55, 0.2, 0.15, 0.1)
LOCALE_ASR = np.array([1.0, 1.1, 1.45, 1.15])
NOISE_SHARE = (0.5, 0.35, 0.15)
NOISE_ASR = np.array([0.6, 1.0, 2.3])
DOMAIN_SHARE = {"smart_home": 0.2, "music": 0.2, "knowledge": 0.14, "weather": 0.09, "timers": 0.09,
                "shopping": 0.08, "calendar": 0.06, "communication": 0.05, "travel": 0.04, "unsupported": 0.05}
DOMAIN_RESULT = {"music": 1.5, "shopping": 1.4, "smart_home": 1.2, "travel": 1.3}
DOMAIN_NLU = {"knowledge": 1.4, "communication": 1.3, "calendar": 1.2, "unsupported": 1.5}

FUNCTION_WORDS = ("the", "a", "to", "please", "my", "in", "on", "for", "of", "me", "can", "you", "is", "what")
SWAPS = {"the": "a", "a": "the", "to": "two", "for": "four", "in": "on", "on": "in", "my": "by", "is": "as", "me": "be"}
BACKGROUND = ("", "uh", "hmm", "okay", "yeah right", "no no", "the game", "and then", "what was that",
              "so anyway", "i told her", "last night", "turn", "play", "she said", "oh really")
AFFIRM = ("yes", "yes please", "yeah", "the first one", "the second one", "that one", "correct", "yep that one")
DENY = ("no", "neither", "no that's wrong", "nope", "no not that")
CORRECTIONS = ("no ", "no i said ", "i said ", "not that ", "no no ")


# ----------------------------------------------------------------- the bank

@dataclass(frozen=True)
class Bank:
    """Utterances with their precomputed ASR variants and slot lists, as arrays."""

    size: int
    texts: pl.Series  # originals, then minor, entity and garbled variants, background speech, answers
    domain: np.ndarray
    intent: np.ndarray
    intent_code: np.ndarray
    domain_code: np.ndarray
    intents: pl.Series  # names by code; the last two are the answers "affirm" and "deny"
    domains: pl.Series  # names by code; the last is "dialogue"
    has_entity: np.ndarray
    n_words: np.ndarray
    by_domain: dict[str, np.ndarray]
    nlu_difficulty: np.ndarray
    result_difficulty: np.ndarray
    by_intent: np.ndarray  # for each utterance, a sibling index with the same intent (or itself)
    slots: pl.Series  # list[struct]: variants 0 original, 1 entity misheard, 2 slot dropped; index 3*u+v
    credit: str

    @property
    def minor_at(self) -> int:
        return self.size

    @property
    def entity_at(self) -> int:
        return 2 * self.size

    @property
    def major_at(self) -> int:
        return 3 * self.size

    @property
    def background_at(self) -> int:
        return 4 * self.size

    @property
    def affirm_at(self) -> int:
        return self.background_at + len(BACKGROUND)

    @property
    def deny_at(self) -> int:
        return self.affirm_at + len(AFFIRM)


def _corrupt_word(word: str, rng: random.Random) -> str:
    """A sound-alike misrecognition of one word."""
    vowels = {"a": "e", "e": "i", "i": "ee", "o": "u", "u": "o", "y": "ie"}
    chars = list(word)
    for _ in range(1 + (len(word) > 6)):
        spots = [i for i, c in enumerate(chars) if c in vowels]
        if spots and rng.random() < 0.7:
            i = rng.choice(spots)
            chars[i] = vowels[chars[i]]
        elif len(chars) > 3:
            del chars[rng.randrange(1, len(chars))]
    out = "".join(chars)
    if len(out) > 7 and rng.random() < 0.4:
        cut = rng.randrange(3, len(out) - 3)
        out = out[:cut] + " " + out[cut:]
    return out if out != word else word + "s"


def _minor(words: list[str], rng: random.Random) -> str:
    spots = [i for i, w in enumerate(words) if w in FUNCTION_WORDS]
    if not spots:
        return " ".join(words[:-1] + [words[-1] + "s"]) if len(words) > 1 else words[0] + "s"
    i = rng.choice(spots)
    out = list(words)
    if words[i] in SWAPS and rng.random() < 0.5:
        out[i] = SWAPS[words[i]]
    else:
        del out[i]
    return " ".join(out)


def _major(words: list[str], vocabulary: list[str], rng: random.Random) -> str:
    keep = max(1, len(words) // 3)
    tail = [rng.choice(vocabulary) for _ in range(max(1, len(words) - keep + rng.randint(-1, 1)))]
    return " ".join(words[:keep] + tail)


def _entity_id(slot: str, value: str) -> str:
    return f"{slot}:{hashlib.blake2b(value.encode(), digest_size=5).hexdigest()}"


@lru_cache(maxsize=1)
def load_bank() -> Bank:
    raw = json.loads(resources.files("fpi").joinpath("data", "utterances.json").read_text(encoding="utf-8"))
    rng = random.Random(20201116)
    utterances = raw["utterances"] + [
        {"text": t, "domain": "unsupported", "intent": "out_of_domain", "slots": []} for t in raw["unsupported"]]
    vocabulary = sorted({w for u in utterances for w in u["text"].split()})
    values_by_slot: dict[str, list[str]] = {}
    for u in utterances:
        for s in u["slots"]:
            values_by_slot.setdefault(s["slot"], []).append(s["value"])
    values_by_slot = {k: sorted(set(v)) for k, v in values_by_slot.items()}

    texts, minors, entities, majors, has_entity, slot_rows = [], [], [], [], [], []
    for u in utterances:
        words = u["text"].split()
        target = next((s for s in u["slots"] if s.get("resolvable")), None)
        misheard = None
        if target is not None:
            misheard = " ".join(_corrupt_word(w, rng) for w in target["value"].split())
        texts.append(u["text"])
        minors.append(_minor(words, rng))
        entities.append(u["text"].replace(target["value"], misheard, 1) if target else _minor(words, rng))
        majors.append(_major(words, vocabulary, rng))
        has_entity.append(target is not None)
        original = []
        for s in u["slots"]:
            others = [v for v in values_by_slot[s["slot"]] if v != s["value"]] or [s["value"] + " two"]
            decoy = rng.choice(others)
            original.append({"name": s["slot"], "value": s["value"], "canonical": s["value"],
                             "resolvable": bool(s.get("resolvable")), "entity_id": _entity_id(s["slot"], s["value"]),
                             "decoy_value": decoy, "decoy_id": _entity_id(s["slot"], decoy)})
        misheard_slots = [dict(s, value=misheard) if target is not None and s["canonical"] == target["value"]
                          and s["name"] == target["slot"] else s for s in original]
        dropped = [s for s in original if s is not next((o for o in original if o["resolvable"]), original[-1] if original else None)]
        slot_rows += [original, misheard_slots, dropped]

    domain = np.array([u["domain"] for u in utterances])
    intent = np.array([u["intent"] for u in utterances])
    order = np.argsort(intent, kind="stable")
    sibling = np.empty(len(intent), dtype=np.int64)
    sorted_intent = intent[order]
    starts = np.r_[0, np.flatnonzero(sorted_intent[1:] != sorted_intent[:-1]) + 1]
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts, ends, strict=True):
        group = order[a:b]
        sibling[group] = np.roll(group, -1)
    slot_dtype = pl.List(pl.Struct({"name": pl.String, "value": pl.String, "canonical": pl.String,
                                    "resolvable": pl.Boolean, "entity_id": pl.String,
                                    "decoy_value": pl.String, "decoy_id": pl.String}))
    intent_names, intent_code = np.unique(intent, return_inverse=True)
    domain_names, domain_code = np.unique(domain, return_inverse=True)
    return Bank(
        size=len(texts), texts=pl.Series("text", texts + minors + entities + majors + list(BACKGROUND + AFFIRM + DENY)),
        domain=domain, intent=intent, has_entity=np.array(has_entity),
        intent_code=intent_code, domain_code=domain_code,
        intents=pl.Series([*intent_names, "affirm", "deny"]), domains=pl.Series([*domain_names, "dialogue"]),
        n_words=np.array([len(t.split()) for t in texts]),
        by_domain={d: np.flatnonzero(domain == d) for d in DOMAIN_SHARE},
        nlu_difficulty=np.array([DOMAIN_NLU.get(d, 1.0) for d in domain]),
        result_difficulty=np.array([DOMAIN_RESULT.get(d, 1.0) for d in domain]),
        by_intent=sibling, slots=pl.Series("slots", slot_rows, dtype=slot_dtype),
        credit=raw["credit"] + " " + raw["license"],
    )


# ------------------------------------------------------------- one position

def _beta(rng: np.random.Generator, a: np.ndarray | float, b: np.ndarray | float, n: int) -> np.ndarray:
    return rng.beta(np.broadcast_to(a, n), np.broadcast_to(b, n))


def _pick(rng: np.random.Generator, n: int, choices: dict[int, float]) -> np.ndarray:
    keys = np.array(list(choices))
    return keys[rng.choice(len(keys), size=n, p=np.array(list(choices.values())))]


class _Sessions:
    """Per-session state: context that stays fixed and what the user will do next."""

    def __init__(self, rng: np.random.Generator, n: int, start: datetime, profile: Profile):
        share = [profile.devices.get(d, 0.0) for d in DEVICES] if profile.devices else DEVICE_SHARE
        self.device = rng.choice(len(DEVICES), size=n, p=share)
        self.locale = rng.choice(len(LOCALES), size=n, p=LOCALE_SHARE)
        self.noise = rng.choice(3, size=n, p=NOISE_SHARE)
        self.planned = np.minimum(1 + rng.geometric(profile.session_end, size=n) - 1 + (rng.random(n) < 0.5), MAX_SESSION_TURNS)
        self.clock = start.timestamp() + rng.random(n) * 30 * 86400
        self.next_kind = np.zeros(n, dtype=np.int8)  # 0 new, 1 rephrase, 2 answer to a clarification
        self.last_utterance = np.zeros(n, dtype=np.int64)
        self.clarify_fixed = np.zeros(n, dtype=bool)
        self.active = np.ones(n, dtype=bool)


def _simulate_position(rng: np.random.Generator, bank: Bank, s: _Sessions, k: int, rates: dict[str, float],
                       profile: Profile) -> dict:
    idx = np.flatnonzero(s.active)
    n = idx.size
    kind = s.next_kind[idx]
    device, locale, noise = s.device[idx], s.locale[idx], s.noise[idx]
    answer = kind == 2
    rephrase = kind == 1

    # ---- the request
    domains = np.array(list(DOMAIN_SHARE))
    domain_pick = domains[rng.choice(len(domains), size=n, p=np.array(list(DOMAIN_SHARE.values())))]
    utterance = np.empty(n, dtype=np.int64)
    for d in domains:
        rows = np.flatnonzero(domain_pick == d)
        utterance[rows] = rng.choice(bank.by_domain[d], size=rows.size)
    exact_repeat = rephrase & (rng.random(n) < 0.45)
    previous = s.last_utterance[idx]
    utterance = np.where(rephrase, np.where(exact_repeat, previous, bank.by_intent[previous]), utterance)
    false_wake = ~answer & ~rephrase & (rng.random(n) < rates["wake"] * DEVICE_FALSE_WAKE[device] * np.sqrt(NOISE_ASR[noise]))
    false_wake &= profile.wake
    unsupported = bank.domain[utterance] == "unsupported"

    # ---- ASR: 0 right, 1 function word, 2 entity misheard, 3 garbled
    asr_rate = (rates["asr"] * NOISE_ASR[noise] * DEVICE_NOISE[device] * LOCALE_ASR[locale]
                * (1 + 0.05 * np.maximum(bank.n_words[utterance] - 6, 0)) * np.where(bank.has_entity[utterance], 1.4, 1.0))
    asr_error = ~answer & (rng.random(n) < np.minimum(asr_rate, 0.9))
    asr_kind_draw = _pick(rng, n, {1: 0.45, 2: 0.35, 3: 0.2})
    asr_kind_draw = np.where((asr_kind_draw == 2) & ~bank.has_entity[utterance], 1, asr_kind_draw)
    asr_kind = np.where(asr_error & ~false_wake, asr_kind_draw, 0)

    # ---- NLU: wrong because of ASR (caused) or on its own
    nlu_rate = rates["nlu"] * bank.nlu_difficulty[utterance]
    caused_p = np.select([asr_kind == 3, asr_kind == 2, asr_kind == 1], [0.85, 0.12, 0.1], 0.0)
    nlu_caused = rng.random(n) < caused_p
    nlu_own = ~nlu_caused & (rng.random(n) < nlu_rate) & ~answer
    nlu_wrong = (nlu_caused | nlu_own) & ~false_wake
    nlu_error_kind = _pick(rng, n, {1: 0.55, 2: 0.25, 3: 0.2})  # same domain, other domain, slot dropped
    nlu_error_kind = np.where((nlu_error_kind == 3) & ~bank.has_entity[utterance], 1, nlu_error_kind)
    nlu_clarify = nlu_wrong & (nlu_error_kind != 3) & (rng.random(n) < 0.25)
    nlu_clarify_fixed = nlu_clarify & (rng.random(n) < 0.75)
    decoy = _decoy_utterances(rng, bank, utterance, nlu_error_kind)

    # ---- ER on the first resolvable entity
    er_runs = bank.has_entity[utterance] & ~false_wake & ~answer & profile.er
    intent_right = ~nlu_wrong | (nlu_error_kind == 3)
    misheard_entity = (asr_kind == 2) & intent_right
    fuzzy_fix = misheard_entity & (rng.random(n) < 0.45) & profile.er  # without ER a misheard value is used as heard
    er_own = er_runs & ~misheard_entity & intent_right & (rng.random(n) < rates["er"])
    er_own_kind = _pick(rng, n, {3: 0.35, 4: 0.4, 5: 0.25})  # unresolved, wrong, ambiguous
    er_caused_kind = np.where(rng.random(n) < 0.6, 3, 4)
    # er kind: 0 did not run, 1 right, 2 fuzzy-recovered, 3 unresolved, 4 wrong, 5 ambiguous
    er_kind = np.select([~er_runs, misheard_entity & fuzzy_fix, misheard_entity, er_own], [0, 2, er_caused_kind, er_own_kind], 1)
    er_kind = np.where((nlu_error_kind == 3) & nlu_wrong & (er_kind != 0), 1, er_kind)
    er_clarify = er_kind == 5
    er_clarify_fixed = er_clarify & (rng.random(n) < 0.7)

    # ---- the label: first failure not recovered
    nlu_failed = nlu_wrong & ~nlu_clarify_fixed
    asr_failed = (nlu_failed & nlu_caused) | (misheard_entity & ~fuzzy_fix & ~nlu_failed)
    nlu_own_failed = nlu_failed & ~nlu_caused
    er_failed = ~nlu_failed & ~misheard_entity & (((er_kind == 3) | (er_kind == 4)) | (er_clarify & ~er_clarify_fixed))
    upstream_ok = ~false_wake & ~asr_failed & ~nlu_own_failed & ~er_failed
    clarified = (nlu_clarify | er_clarify) & upstream_ok
    result_rate = rates["result"] * bank.result_difficulty[utterance]
    result_failed = upstream_ok & ~clarified & ~unsupported & ~answer & (rng.random(n) < result_rate)
    label = np.select([false_wake, asr_failed, nlu_own_failed, er_failed, result_failed],
                      [0, 1, 2, 3, 4], 5).astype(np.int8)
    failed = label < 5

    # ---- result status
    status = np.select(
        [answer, nlu_clarify | er_clarify, false_wake, result_failed, nlu_failed, er_kind == 3, er_failed,
         unsupported & ~nlu_failed],
        [_pick(rng, n, {0: 0.85, 3: 0.15}), np.full(n, 2), _pick(rng, n, {3: 0.5, 0: 0.3, 6: 0.2}),
         _pick(rng, n, {5: 0.35, 0: 0.3, 1: 0.15, 3: 0.2}), _pick(rng, n, {0: 0.55, 3: 0.2, 4: 0.1, 5: 0.05, 1: 0.1}),
         _pick(rng, n, {3: 0.5, 1: 0.3, 5: 0.2}), _pick(rng, n, {0: 0.8, 1: 0.2}), np.full(n, 4)],
        _pick(rng, n, {0: 0.96, 1: 0.04}))

    # ---- the user's reaction
    r = rng.random(n)
    succeeded_looking = status == 0
    barge_in = rng.random(n) < np.select([label == 0, failed], [0.3, np.where(succeeded_looking, 0.4, 0.25)], 0.05) * profile.barge_in
    feedback = profile.explicit_feedback
    explicit = np.select([failed & (rng.random(n) < 0.12 * feedback), ~failed & (rng.random(n) < 0.015 * feedback),
                          ~failed & (rng.random(n) < 0.05 * feedback)], [2, 2, 1], 0)
    asks_again = (failed & (label > 0) & (r < 0.55 * profile.rephrase)) | (~failed & (r < 0.04))
    abandons = failed & (r >= 0.55 * profile.rephrase) & (r < 0.55 * profile.rephrase + 0.2)
    continues = (k + 1 < s.planned[idx]) | asks_again | clarified | (nlu_clarify | er_clarify)
    continues &= ~abandons & (k + 1 < MAX_SESSION_TURNS)
    will_answer = (nlu_clarify | er_clarify) & (rng.random(n) < 0.9)
    clarify_fixed = nlu_clarify_fixed | er_clarify_fixed
    gap = np.select([will_answer, asks_again, label == 0],
                    [1.0 + rng.gamma(2.0, 1.0, n), 1.5 + rng.gamma(2.0, 2.0, n), 20 + rng.exponential(300, n)],
                    5 + rng.exponential(90, n))

    # ---- the answer turns to a clarification
    answer_fixed = s.clarify_fixed[idx]
    answer_text = np.where(answer_fixed, bank.affirm_at + rng.integers(len(AFFIRM), size=n),
                           bank.deny_at + rng.integers(len(DENY), size=n))

    turn = {
        "session": idx, "position": np.full(n, k), "time": s.clock[idx].copy(), "device": device, "locale": locale,
        "noise": noise, "utterance": utterance, "decoy": decoy, "answer": answer, "answer_text": answer_text,
        "answer_fixed": answer_fixed, "false_wake": false_wake, "asr_kind": asr_kind, "nlu_wrong": nlu_wrong,
        "nlu_error_kind": nlu_error_kind, "nlu_caused": nlu_caused, "er_kind": er_kind, "status": status,
        "label": label, "barge_in": barge_in, "explicit": explicit, "clarify": nlu_clarify | er_clarify,
        "recovered": ~failed & ((asr_kind > 0) | nlu_wrong | (er_kind >= 2)),
        "silent_failure": failed & ~barge_in & (explicit != 2) & ~asks_again,
        "unsupported": unsupported, "rephrase": rephrase,
    }

    # ---- the next turn
    s.clock[idx] += gap
    s.next_kind[idx] = np.select([will_answer, asks_again | (answer & ~answer_fixed & (r < 0.6))], [2, 1], 0)
    s.clarify_fixed[idx] = clarify_fixed
    s.last_utterance[idx] = np.where(answer, previous, utterance)
    s.active[idx] = continues | (answer & ~answer_fixed & (r < 0.6) & (k + 1 < MAX_SESSION_TURNS))
    return turn


def _decoy_utterances(rng: np.random.Generator, bank: Bank, utterance: np.ndarray, error_kind: np.ndarray) -> np.ndarray:
    """What a wrong NLU heard instead: another intent of the same domain, or of another domain."""
    n = utterance.size
    anywhere = rng.integers(bank.size, size=n)
    same = utterance.copy()
    for d, rows_of_domain in bank.by_domain.items():
        rows = np.flatnonzero(bank.domain[utterance] == d)
        same[rows] = rows_of_domain[rng.integers(rows_of_domain.size, size=rows.size)]
    same = np.where(bank.intent_code[same] == bank.intent_code[utterance], anywhere, same)
    other = np.where(bank.domain_code[anywhere] == bank.domain_code[utterance], bank.by_intent[anywhere], anywhere)
    return np.select([error_kind == 1, error_kind == 2], [same, other], utterance)


RESPONSES = {
    "success": "Okay.", "partial": "I could only do part of that.",
    "fallback": "Sorry, I don't know that one.", "unsupported": "Sorry, I can't do that yet.",
    "error": "Sorry, something went wrong.",
}


def _stage_columns(rng: np.random.Generator, bank: Bank, t: dict[str, np.ndarray], profile: Profile) -> pl.DataFrame:
    """Observable trace fields for each simulated turn, as trace-format struct columns."""
    n = t["utterance"].size
    u, asr_kind, fw, answer = t["utterance"], t["asr_kind"], t["false_wake"], t["answer"]
    sibling = bank.by_intent[u]

    # wake
    verifies = DEVICE_VERIFIES_WAKE[t["device"]]
    verified = np.where(fw, rng.random(n) < 0.35, rng.random(n) < 0.97)
    wake_score = profile.wake_calibration.apply(np.where(fw, _beta(rng, 4, 4, n), _beta(rng, 9, 2, n)), rng)

    # asr: text indices into bank.texts
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

    # nlu: intent codes into bank.intents
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
                               [_beta(rng, 12, 2, n), _beta(rng, 2.5, 4, n), _beta(rng, 4, 3.5, n), _beta(rng, 7, 3, n)],
                               _beta(rng, 10, 2, n))
    nlu_confidence = profile.nlu_calibration.apply(nlu_confidence, rng)
    nlu_c2 = nlu_confidence * np.where(wrong_intent | t["clarify"], rng.uniform(0.6, 1.0, n), rng.uniform(0.05, 0.6, n))
    nlu_nbest_size = rng.choice(len(profile.nlu_nbest), size=n, p=profile.nlu_nbest)
    slot_variant = np.select([answer | (fw & (rng.random(n) < 0.7)), slot_error, asr_kind == 2], [-1, 2, 1], 0)
    slot_index = np.where(slot_variant < 0, -1, 3 * heard + np.maximum(slot_variant, 0))

    # result
    status = t["status"]
    if profile.statuses:
        logged = np.array([RESULT_STATUSES.index(profile.statuses.get(s, s)) for s in RESULT_STATUSES])
        status = logged[status]
    latency = np.exp(rng.normal(6.3, 0.45, n))
    latency = np.where((status == 5) & (rng.random(n) < 0.3), 8000 + rng.exponential(1500, n), latency)

    texts, intents, domains = bank.texts, bank.intents, bank.domains
    spoken = texts.gather(asr_text)
    if profile.corrections:
        corrects = t["rephrase"] & (rng.random(n) < profile.corrections)
        opening = pl.Series(CORRECTIONS).gather(rng.integers(len(CORRECTIONS), size=n))
        spoken = pl.select(pl.when(pl.Series(corrects)).then(opening + spoken).otherwise(spoken)).to_series()
    if profile.rename_vocabulary:
        salt = profile.rename_vocabulary
        intents = intents.map_elements(lambda name: opaque_name(salt, name), return_dtype=pl.String)
        domains = domains.map_elements(lambda name: opaque_name(salt, name), return_dtype=pl.String)
    frame = pl.DataFrame({
        "row": np.arange(n), "fw": fw, "answer": answer, "asr_empty": asr_empty, "verifies": verifies,
        "verified": verified, "wake_score": wake_score, "asr_text": spoken, "asr_confidence": asr_confidence,
        "alt1": texts.gather(alt1), "alt2": texts.gather(alt2), "c2": c2, "c3": c3, "nbest_size": nbest_size,
        "intent": intents.gather(intent), "domain": domains.gather(domain), "nlu_confidence": nlu_confidence,
        "second": intents.gather(second), "second_domain": domains.gather(second_domain), "nlu_c2": nlu_c2,
        "nlu_nbest_size": nlu_nbest_size, "status": pl.Series(RESULT_STATUSES).gather(status),
        "latency_ms": np.round(latency, 1), "er_kind": t["er_kind"], "slot_index": slot_index,
    })
    slots, entities = _slots_and_entities(rng, bank, frame, profile)
    c = pl.col
    ran = c("status") != "none"
    response = (pl.when(c("status") == "clarify").then(pl.format("Did you mean {} or {}?", c("intent"), c("second")))
                .otherwise(c("status").replace_strict(RESPONSES, default=None)))
    return frame.join(slots, on="row", how="left").join(entities, on="row", how="left").sort("row").select(
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


def _without_scores(stages: pl.DataFrame, profile: Profile) -> pl.DataFrame:
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
                      [_beta(rng, 5, 2.5, m), _beta(rng, 1.5, 6, m), _beta(rng, 5, 3, m), _beta(rng, 4, 4, m)],
                      _beta(rng, 9, 1.8, m))
    score = profile.er_calibration.apply(score, rng)
    misheard = exploded["value"].to_numpy() != exploded["canonical"].to_numpy()
    slot_confidence = profile.nlu_calibration.apply(np.where(misheard, _beta(rng, 5, 3, m), _beta(rng, 8, 2, m)), rng)
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


def _annotator_labels(rng: np.random.Generator, t: dict[str, np.ndarray], noise: float) -> np.ndarray:
    """One human annotator's labels: mistakes are rare on clear turns and common on hard ones."""
    label = t["label"]
    n = label.size
    difficulty = (0.15 + 0.6 * t["recovered"] + 0.8 * ((t["asr_kind"] == 1) & t["nlu_wrong"])
                  + 0.5 * t["silent_failure"] + 0.5 * ((t["asr_kind"] == 2) & (label == 1))
                  + 0.3 * (label == 3) + 0.4 * ((label == 4) & (t["status"] == 0))
                  + 0.3 * (t["false_wake"] & ~t["answer"]))
    p = np.minimum(noise * difficulty / difficulty.mean(), 0.95)
    confusable = {0: (1, 5), 1: (2, 3, 5), 2: (1, 3), 3: (2, 1), 4: (5, 3), 5: (4, 1, 2)}
    wrong = np.empty(n, dtype=np.int8)
    pick = rng.random(n)
    for gold, options in confusable.items():
        rows = label == gold
        wrong[rows] = np.array(options)[(pick[rows] * len(options)).astype(int)]
    recovered_stage = np.select([t["asr_kind"] > 0, t["nlu_wrong"], t["er_kind"] >= 2], [1, 2, 3], 4)
    wrong = np.where((label == 5) & t["recovered"], recovered_stage, wrong)
    return np.where(rng.random(n) < p, wrong, label).astype(np.int8)


def parse_error_rates(items: list[str]) -> dict[str, float]:
    """`STAGE=P` strings (as `fpi simulate --error-rate` takes them) as base error rates."""
    rates: dict[str, float] = {}
    for item in items:
        stage, _, value = item.partition("=")
        if stage not in STAGES:
            raise UsageError(f"--error-rate {item}: unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        try:
            rates[stage] = float(value)
        except ValueError:
            raise UsageError(f"--error-rate {item}: expected STAGE=P with P a number in [0, 1]") from None
        if not 0 <= rates[stage] <= 1:
            raise UsageError(f"--error-rate {item}: expected P in [0, 1]")
    return rates


RANDOM_BATCH_TURNS = 5_000


def simulate(n_turns: int, *, seed: int = 0, error_rates: dict[str, float] | None = None,
             annotator_noise: float | None = None, profile: Profile | str = "default",
             batch_turns: int = RANDOM_BATCH_TURNS,
             start: datetime = datetime(2026, 10, 1, tzinfo=timezone.utc)) -> pl.DataFrame:
    """`n_turns` labeled turns in trace format v1 (columns as `load_traces` returns, less line/raw).

    `profile` is the assistant (`fpi.simulation.profiles`): a name, a `Profile`, or "random" for a new
    random assistant every `batch_turns` turns (then an `assistant` column names each one).
    `error_rates` sets each stage's base error rate over the profile's (see DEFAULT_ERROR_RATES);
    context (noise, device, locale, domain) scales it, cascades and recoveries shape the final
    mix. `annotator_noise` adds `human_label`, one annotator's labels with that error rate."""
    if n_turns < 1:
        raise ValueError("n_turns must be at least 1")
    if profile == "random":
        return _simulate_random(n_turns, seed=seed, error_rates=error_rates, annotator_noise=annotator_noise,
                                batch_turns=batch_turns, start=start)
    assistant = profile_named(profile) if isinstance(profile, str) else profile
    assistant = with_error_rates(assistant, error_rates or {})
    rates = {**DEFAULT_ERROR_RATES, **assistant.error_rates}
    unknown = set(rates) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage in error_rates: {', '.join(sorted(unknown))}; expected {', '.join(STAGES)}")
    bank = load_bank()
    rng = np.random.default_rng(seed)
    sessions = _Sessions(rng, max(8, int(n_turns / 1.6) + 16), start, assistant)
    positions = []
    for k in range(MAX_SESSION_TURNS):
        if not sessions.active.any():
            break
        positions.append(_simulate_position(rng, bank, sessions, k, rates, assistant))
    turns = {key: np.concatenate([p[key] for p in positions]) for key in positions[0]}
    if turns["session"].size < n_turns:
        return simulate(n_turns, seed=seed + 7919, error_rates=error_rates, annotator_noise=annotator_noise, profile=profile,
                        start=start)
    keep = np.lexsort((turns["position"], turns["session"]))[:n_turns]
    turns = {key: value[keep] for key, value in turns.items()}
    stages = _without_scores(_stage_columns(rng, bank, turns, assistant), assistant)
    labels = np.array(LABELS, dtype=object)
    frame = pl.DataFrame({
        "turn_id": pl.Series(np.arange(n_turns)).cast(pl.String).str.zfill(8),
        "session_id": pl.Series(turns["session"]).cast(pl.String).str.zfill(7),
        "turn_index": turns["position"].astype(np.int64),
        "epoch_ms": (turns["time"] * 1000).astype(np.int64),
        "locale": np.array(LOCALES, dtype=object)[turns["locale"]].astype(str),
        "device_type": np.array(DEVICES, dtype=object)[turns["device"]].astype(str),
        "has_screen": DEVICE_HAS_SCREEN[turns["device"]],
        "barge_in": turns["barge_in"],
        "explicit": pl.Series(turns["explicit"]).replace_strict([0, 1, 2], [None, "positive", "negative"], return_dtype=pl.String),
        "label": labels[turns["label"]].astype(str),
    })
    c = pl.col
    frame = pl.concat([frame, stages], how="horizontal").select(
        turn_id="t" + c("turn_id"), session_id="s" + c("session_id"), turn_index=c("turn_index"),
        timestamp=pl.from_epoch(c("epoch_ms"), time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        locale=c("locale"), device=pl.struct(type=c("device_type"), has_screen=c("has_screen")),
        wake=c("wake"), asr=c("asr"), nlu=c("nlu"), er=c("er"), result=c("result"),
        feedback=pl.struct(barge_in=c("barge_in"), explicit=c("explicit")),
        label=c("label"), epoch_ms=c("epoch_ms"),
    )
    if annotator_noise is not None:
        frame = frame.with_columns(human_label=pl.Series(labels[_annotator_labels(rng, turns, annotator_noise)].astype(str)))
    return frame.sort("epoch_ms", "turn_id").drop("epoch_ms")


def _simulate_random(n_turns: int, *, seed: int, error_rates: dict[str, float] | None, annotator_noise: float | None,
                     batch_turns: int, start: datetime) -> pl.DataFrame:
    """A new random assistant for every batch of turns; ids stay unique across batches."""
    parts = []
    for i, begin in enumerate(range(0, n_turns, batch_turns)):
        name = f"random-{seed}-{i}"
        assistant = draw_profile(np.random.default_rng([seed, i, 1]), name)
        part = simulate(min(batch_turns, n_turns - begin), seed=int(np.random.default_rng([seed, i, 2]).integers(2**31)),
                        error_rates=error_rates, annotator_noise=annotator_noise, profile=assistant, start=start)
        parts.append(part.with_columns(turn_id=pl.lit(f"a{i}-") + pl.col("turn_id"),
                                       session_id=pl.lit(f"a{i}-") + pl.col("session_id"), assistant=pl.lit(name)))
    return pl.concat(parts)


def stage_events(frame: pl.DataFrame) -> pl.Series:
    """The turns as per-stage event lines (`{turn_id, session_id, turn_index, stage, data}`), in turn order."""
    c = pl.col
    turn_fields = [n for n in frame.columns if n not in (*STAGES, "feedback", "turn_id", "session_id", "turn_index")]
    parts = []
    for order, stage in enumerate((*STAGES, "feedback", "turn")):
        data = pl.struct(turn_fields) if stage == "turn" else c(stage)
        part = frame.with_row_index("_row").filter(data.is_not_null() if stage != "turn" else pl.lit(True)).select(
            "_row", _order=pl.lit(order),
            line=pl.struct("turn_id", "session_id", "turn_index", stage=pl.lit(stage)).struct.json_encode().str.strip_suffix("}")
            + ',"data":' + data.struct.json_encode() + "}")
        parts.append(part)
    return pl.concat(parts).sort("_row", "_order")["line"]


TRACE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


def write_traces(frame: pl.DataFrame, path: str | Path, *, form: str = "turn") -> None:
    """Write turns as JSON Lines (one per turn, or per stage event with form="stage"; gzipped when the
    name ends .gz), or Parquet, atomically. Other names are refused: a trace file is one of these."""
    name = str(path).lower()
    if not name.endswith(TRACE_SUFFIXES):
        raise UsageError(f"{path}: trace files are {', '.join(TRACE_SUFFIXES)}; name the output so")
    if name.endswith(".parquet"):
        if form == "stage":
            raise UsageError(f"{path}: the per-stage form is JSON Lines only; name the output .jsonl or .jsonl.gz")
        atomic_write(path, lambda tmp: frame.write_parquet(tmp))
        return
    text = ("\n".join(stage_events(frame).to_list()) + "\n") if form == "stage" else frame.write_ndjson()
    data = text.encode("utf-8")
    if name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)  # mtime 0: the same traces give the same bytes
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
