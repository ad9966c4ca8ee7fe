"""Labeled traces from a causal model of an assistant and its users.

Each turn draws latent outcomes stage by stage (an ASR error can make NLU or
ER fail, ER can fuzzy-match a misheard name, a clarification can fix an
ambiguity), the label is the first stage whose failure was not recovered,
and users react to what happened. Observed confidences are noisy draws whose
distributions overlap between right and wrong stages, as in real logs
(`observed_stages`). Vectorised over sessions, one step per turn position."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from fpi.contract.atomic_files import atomic_write
from fpi.contract.errors import UsageError
from fpi.contract.trace_format import LABELS, STAGES
from fpi.simulation.observed_stages import stage_columns, without_scores
from fpi.simulation.profiles import Profile, draw_profile, profile_named, with_error_rates
from fpi.simulation.utterance_bank import AFFIRM, DENY, DOMAIN_SHARE, Bank, load_bank

DEFAULT_ERROR_RATES = {"wake": 0.03, "asr": 0.11, "nlu": 0.07, "er": 0.08, "result": 0.05}
MAX_SESSION_TURNS = 8

DEVICES = ("speaker", "speaker_screen", "tv", "phone", "car")
DEVICE_SHARE = (0.42, 0.2, 0.1, 0.16, 0.12)
DEVICE_HAS_SCREEN = np.array([False, True, True, True, False])
DEVICE_FALSE_WAKE = np.array([1.0, 1.0, 2.5, 0.6, 1.6])
DEVICE_NOISE = np.array([1.0, 1.0, 1.2, 0.9, 1.7])
LOCALES = ("en-US", "en-GB", "en-IN", "en-AU")
LOCALE_SHARE = (0.55, 0.2, 0.15, 0.1)
LOCALE_ASR = np.array([1.0, 1.1, 1.45, 1.15])
NOISE_SHARE = (0.5, 0.35, 0.15)
NOISE_ASR = np.array([0.6, 1.0, 2.3])

# ------------------------------------------------------------- one position

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
    """The turns at position `k` of every session still going: what the user asked, what each stage did
    with it, the label, and how the user reacted (which decides the session's next turn)."""
    idx = np.flatnonzero(s.active)
    t = _request(rng, bank, s, idx, rates, profile)
    t |= _stages(rng, bank, t, rates, profile)
    t |= _outcome(rng, bank, t, rates)
    return _reaction(rng, bank, s, idx, k, t, profile)


def _request(rng: np.random.Generator, bank: Bank, s: _Sessions, idx: np.ndarray, rates: dict[str, float],
             profile: Profile) -> dict:
    """What each user asked: a new request, a rephrase of the last, or an answer to a clarification."""
    n = idx.size
    kind = s.next_kind[idx]
    device, locale, noise = s.device[idx], s.locale[idx], s.noise[idx]
    answer = kind == 2
    rephrase = kind == 1
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
    return {"n": n, "device": device, "locale": locale, "noise": noise, "answer": answer, "rephrase": rephrase,
            "utterance": utterance, "previous": previous, "false_wake": false_wake, "unsupported": unsupported}


def _stages(rng: np.random.Generator, bank: Bank, t: dict, rates: dict[str, float], profile: Profile) -> dict:
    """What ASR, NLU and ER did: right, wrong on their own, wrong because of the stage before, or recovered."""
    n, device, locale, noise, answer = t["n"], t["device"], t["locale"], t["noise"], t["answer"]
    utterance, false_wake = t["utterance"], t["false_wake"]
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
    return {"asr_kind": asr_kind, "nlu_caused": nlu_caused, "nlu_wrong": nlu_wrong, "nlu_error_kind": nlu_error_kind,
            "nlu_clarify": nlu_clarify, "nlu_clarify_fixed": nlu_clarify_fixed, "decoy": decoy, "misheard_entity": misheard_entity,
            "fuzzy_fix": fuzzy_fix, "er_kind": er_kind, "er_clarify": er_clarify, "er_clarify_fixed": er_clarify_fixed}


def _outcome(rng: np.random.Generator, bank: Bank, t: dict, rates: dict[str, float]) -> dict:
    """The label (the first failure not recovered) and the result status the assistant logged."""
    n, answer, utterance, false_wake, unsupported = t["n"], t["answer"], t["utterance"], t["false_wake"], t["unsupported"]
    nlu_wrong, nlu_caused, nlu_clarify, er_kind, er_clarify = t["nlu_wrong"], t["nlu_caused"], t["nlu_clarify"], t["er_kind"], t["er_clarify"]
    misheard_entity, fuzzy_fix = t["misheard_entity"], t["fuzzy_fix"]
    nlu_failed = nlu_wrong & ~t["nlu_clarify_fixed"]
    asr_failed = (nlu_failed & nlu_caused) | (misheard_entity & ~fuzzy_fix & ~nlu_failed)
    nlu_own_failed = nlu_failed & ~nlu_caused
    er_failed = ~nlu_failed & ~misheard_entity & (((er_kind == 3) | (er_kind == 4)) | (er_clarify & ~t["er_clarify_fixed"]))
    upstream_ok = ~false_wake & ~asr_failed & ~nlu_own_failed & ~er_failed
    clarified = (nlu_clarify | er_clarify) & upstream_ok
    result_rate = rates["result"] * bank.result_difficulty[utterance]
    result_failed = upstream_ok & ~clarified & ~unsupported & ~answer & (rng.random(n) < result_rate)
    label = np.select([false_wake, asr_failed, nlu_own_failed, er_failed, result_failed],
                      [0, 1, 2, 3, 4], 5).astype(np.int8)
    status = np.select(
        [answer, nlu_clarify | er_clarify, false_wake, result_failed, nlu_failed, er_kind == 3, er_failed,
         unsupported & ~nlu_failed],
        [_pick(rng, n, {0: 0.85, 3: 0.15}), np.full(n, 2), _pick(rng, n, {3: 0.5, 0: 0.3, 6: 0.2}),
         _pick(rng, n, {5: 0.35, 0: 0.3, 1: 0.15, 3: 0.2}), _pick(rng, n, {0: 0.55, 3: 0.2, 4: 0.1, 5: 0.05, 1: 0.1}),
         _pick(rng, n, {3: 0.5, 1: 0.3, 5: 0.2}), _pick(rng, n, {0: 0.8, 1: 0.2}), np.full(n, 4)],
        _pick(rng, n, {0: 0.96, 1: 0.04}))
    return {"label": label, "status": status, "clarified": clarified}


def _reaction(rng: np.random.Generator, bank: Bank, s: _Sessions, idx: np.ndarray, k: int, t: dict, profile: Profile) -> dict:
    """How each user reacted (barge-in, explicit feedback, asking again, giving up), the turn as drawn, and
    the session's next turn."""
    n, answer, label, status = t["n"], t["answer"], t["label"], t["status"]
    nlu_clarify, er_clarify, clarified = t["nlu_clarify"], t["er_clarify"], t["clarified"]
    failed = label < 5
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
    clarify_fixed = t["nlu_clarify_fixed"] | t["er_clarify_fixed"]
    gap = np.select([will_answer, asks_again, label == 0],
                    [1.0 + rng.gamma(2.0, 1.0, n), 1.5 + rng.gamma(2.0, 2.0, n), 20 + rng.exponential(300, n)],
                    5 + rng.exponential(90, n))
    answer_fixed = s.clarify_fixed[idx]
    answer_text = np.where(answer_fixed, bank.affirm_at + rng.integers(len(AFFIRM), size=n),
                           bank.deny_at + rng.integers(len(DENY), size=n))
    turn = {
        "session": idx, "position": np.full(n, k), "time": s.clock[idx].copy(), "device": t["device"], "locale": t["locale"],
        "noise": t["noise"], "utterance": t["utterance"], "decoy": t["decoy"], "answer": answer, "answer_text": answer_text,
        "answer_fixed": answer_fixed, "false_wake": t["false_wake"], "asr_kind": t["asr_kind"], "nlu_wrong": t["nlu_wrong"],
        "nlu_error_kind": t["nlu_error_kind"], "nlu_caused": t["nlu_caused"], "er_kind": t["er_kind"], "status": status,
        "label": label, "barge_in": barge_in, "explicit": explicit, "clarify": nlu_clarify | er_clarify,
        "recovered": ~failed & ((t["asr_kind"] > 0) | t["nlu_wrong"] | (t["er_kind"] >= 2)),
        "silent_failure": failed & ~barge_in & (explicit != 2) & ~asks_again,
        "unsupported": t["unsupported"], "rephrase": t["rephrase"],
    }
    s.clock[idx] += gap
    s.next_kind[idx] = np.select([will_answer, asks_again | (answer & ~answer_fixed & (r < 0.6))], [2, 1], 0)
    s.clarify_fixed[idx] = clarify_fixed
    s.last_utterance[idx] = np.where(answer, t["previous"], t["utterance"])
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
    frame = _as_traces(turns, without_scores(stage_columns(rng, bank, turns, assistant), assistant))
    if annotator_noise is not None:
        labels = np.array(LABELS, dtype=object)
        frame = frame.with_columns(human_label=pl.Series(labels[_annotator_labels(rng, turns, annotator_noise)].astype(str)))
    return frame.sort("epoch_ms", "turn_id").drop("epoch_ms")


def _as_traces(turns: dict[str, np.ndarray], stages: pl.DataFrame) -> pl.DataFrame:
    """The drawn turns as trace format v1 (with `epoch_ms`, to order them by)."""
    labels = np.array(LABELS, dtype=object)
    n_turns = turns["session"].size
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
    return pl.concat([frame, stages], how="horizontal").select(
        turn_id="t" + c("turn_id"), session_id="s" + c("session_id"), turn_index=c("turn_index"),
        timestamp=pl.from_epoch(c("epoch_ms"), time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        locale=c("locale"), device=pl.struct(type=c("device_type"), has_screen=c("has_screen")),
        wake=c("wake"), asr=c("asr"), nlu=c("nlu"), er=c("er"), result=c("result"),
        feedback=pl.struct(barge_in=c("barge_in"), explicit=c("explicit")),
        label=c("label"), epoch_ms=c("epoch_ms"),
    )


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
