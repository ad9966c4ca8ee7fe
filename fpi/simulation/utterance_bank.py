"""The utterances simulated users say, from SLURP (`fpi/data/utterances.json`, CC BY 4.0), with what
an ASR can make of each (a function word dropped or swapped, an entity misheard, the whole garbled)
and its slots as NLU fills them (right, misheard, one dropped): drawn once, with a fixed seed, as arrays."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import polars as pl

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
    forms = [_forms(u, vocabulary, values_by_slot, rng) for u in utterances]  # in order: one seeded draw
    texts = [u["text"] for u in utterances]
    domain = np.array([u["domain"] for u in utterances])
    intent = np.array([u["intent"] for u in utterances])
    slot_dtype = pl.List(pl.Struct({"name": pl.String, "value": pl.String, "canonical": pl.String,
                                    "resolvable": pl.Boolean, "entity_id": pl.String,
                                    "decoy_value": pl.String, "decoy_id": pl.String}))
    intent_names, intent_code = np.unique(intent, return_inverse=True)
    domain_names, domain_code = np.unique(domain, return_inverse=True)
    variants = [[form[k] for form in forms] for k in range(3)]  # minor, entity, major
    return Bank(
        size=len(texts), texts=pl.Series("text", texts + variants[0] + variants[1] + variants[2] + list(BACKGROUND + AFFIRM + DENY)),
        domain=domain, intent=intent, has_entity=np.array([form[3] for form in forms]),
        intent_code=intent_code, domain_code=domain_code,
        intents=pl.Series([*intent_names, "affirm", "deny"]), domains=pl.Series([*domain_names, "dialogue"]),
        n_words=np.array([len(t.split()) for t in texts]),
        by_domain={d: np.flatnonzero(domain == d) for d in DOMAIN_SHARE},
        nlu_difficulty=np.array([DOMAIN_NLU.get(d, 1.0) for d in domain]),
        result_difficulty=np.array([DOMAIN_RESULT.get(d, 1.0) for d in domain]),
        by_intent=_siblings(intent), slots=pl.Series("slots", [slots for form in forms for slots in form[4]], dtype=slot_dtype),
        credit=raw["credit"] + " " + raw["license"],
    )


def _forms(u: dict, vocabulary: list[str], values_by_slot: dict[str, list[str]],
           rng: random.Random) -> tuple[str, str, str, bool, list[list[dict]]]:
    """What an ASR can make of one utterance (minor, entity misheard, garbled), whether it has an entity to
    resolve, and its slot lists as NLU fills them (right, misheard, one dropped)."""
    words = u["text"].split()
    target = next((s for s in u["slots"] if s.get("resolvable")), None)
    misheard = None
    if target is not None:
        misheard = " ".join(_corrupt_word(w, rng) for w in target["value"].split())
    minor = _minor(words, rng)
    entity = u["text"].replace(target["value"], misheard, 1) if target else _minor(words, rng)
    major = _major(words, vocabulary, rng)
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
    return minor, entity, major, target is not None, [original, misheard_slots, dropped]


def _siblings(intent: np.ndarray) -> np.ndarray:
    """For each utterance, another of the same intent (or itself): what a rephrase says."""
    order = np.argsort(intent, kind="stable")
    sibling = np.empty(len(intent), dtype=np.int64)
    sorted_intent = intent[order]
    starts = np.r_[0, np.flatnonzero(sorted_intent[1:] != sorted_intent[:-1]) + 1]
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts, ends, strict=True):
        group = order[a:b]
        sibling[group] = np.roll(group, -1)
    return sibling
