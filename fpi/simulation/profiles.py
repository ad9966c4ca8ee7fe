"""Assistant profiles: what differs between one assistant and another, for the simulator.

A model that has only seen one assistant learns that assistant's quirks: its confidence
scale, its intent names, that every turn has a wake word. Profiles vary what real
assistants vary (which stages exist, how each stage's confidence is calibrated, n-best
sizes, the result statuses in use, the vocabulary of intents, session lengths, error
rates, how users react), so a model trained across many of them keeps only what means
the same everywhere. docs/simulator.md describes every knob and shipped profile."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from fpi.contract.errors import UsageError


@dataclass(frozen=True)
class Calibration:
    """How a stage reports confidence: the simulator's score `c` (right and wrong turns drawn
    from overlapping distributions) becomes `low + (high - low) * ((1 - blur) * c + blur * u) ** power`,
    with `u` uniform noise. power > 1 pushes scores down (many right turns under 0.3), < 1 up;
    low/high squash the range; blur makes right and wrong overlap more."""

    power: float = 1.0
    low: float = 0.0
    high: float = 1.0
    blur: float = 0.0

    @property
    def identity(self) -> bool:
        return self == Calibration()

    def apply(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.identity:
            return scores
        mixed = (1 - self.blur) * scores + self.blur * rng.random(scores.shape) if self.blur else scores
        return self.low + (self.high - self.low) * np.clip(mixed, 0.0, 1.0) ** self.power


@dataclass(frozen=True)
class Profile:
    """One simulated assistant. The defaults are the simulator's original assistant."""

    name: str = "default"
    description: str = "a smart speaker family with wake word, SLURP vocabulary and the original calibration"
    wake: bool = True  # a wake-word stage (no: telephone, push-to-talk, typed input)
    er: bool = True  # an entity-resolution stage (no: slot filling, where slot values are used as heard)
    error_rates: dict[str, float] = field(default_factory=dict)  # over the simulator's defaults
    wake_calibration: Calibration = Calibration()
    asr_calibration: Calibration = Calibration()
    nlu_calibration: Calibration = Calibration()
    er_calibration: Calibration = Calibration()
    asr_nbest: tuple[float, ...] = (0.12, 0.18, 0.35, 0.35)  # P(n-best size 0, 1, 2, 3)
    nlu_nbest: tuple[float, ...] = (0.1, 0.2, 0.7)  # P(size 0, 1, 2)
    statuses: dict[str, str] = field(default_factory=dict)  # status -> the status this assistant logs instead
    rename_vocabulary: str = ""  # non-empty: intents and domains get opaque names salted with this
    devices: dict[str, float] = field(default_factory=dict)  # device type -> share (default: the original mix)
    session_end: float = 0.45  # chance a session ends after each turn (its planned length is geometric)
    rephrase: float = 1.0  # scales how often users ask again after a failure
    barge_in: float = 1.0  # scales barge-in rates
    explicit_feedback: float = 1.0  # scales explicit feedback ("no", thumbs); 0: none logged
    corrections: float = 0.0  # share of rephrases the user opens with a correction ("no ...", "i said ...")
    scores: tuple[str, ...] = ("wake", "asr", "nlu", "er")  # stages that log a confidence (an LLM agent's log none)

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s for s, on in (("wake", self.wake), ("asr", True), ("nlu", True), ("er", self.er), ("result", True)) if on)


_PHONE = {"phone": 1.0}

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(),
    Profile("telephone-slot-filling",
            "a telephone dialogue system: no wake word, slots used as heard (no ER), ASR scores on a low log-like "
            "scale (many right turns under 0.3), long sessions, no explicit feedback, clarify and fallback only",
            wake=False, er=False, error_rates={"asr": 0.22, "nlu": 0.10, "result": 0.02},
            asr_calibration=Calibration(power=4.0, blur=0.15), nlu_calibration=Calibration(power=1.6, blur=0.1),
            asr_nbest=(0.0, 0.2, 0.3, 0.5), nlu_nbest=(0.0, 0.3, 0.7),
            statuses={"partial": "success", "unsupported": "fallback", "error": "fallback"},
            rename_vocabulary="phone", devices=_PHONE, session_end=0.2, rephrase=1.3, barge_in=1.4,
            explicit_feedback=0.0, corrections=0.4),
    Profile("push-to-talk",
            "a phone app with a talk button: no wake word, ER against the user's contacts and media, confidences "
            "squashed into [0.5, 1], one ASR hypothesis",
            wake=False, asr_calibration=Calibration(low=0.5, high=1.0), nlu_calibration=Calibration(low=0.5, high=1.0),
            er_calibration=Calibration(low=0.4, high=1.0), asr_nbest=(0.0, 1.0), nlu_nbest=(0.0, 1.0),
            devices=_PHONE, session_end=0.65, explicit_feedback=0.5),
    Profile("in-car",
            "an in-car assistant: noisy cabin (twice the ASR errors), confidences that overlap a lot, barge-in "
            "common, renamed intents",
            error_rates={"asr": 0.22, "wake": 0.05}, asr_calibration=Calibration(blur=0.35),
            nlu_calibration=Calibration(blur=0.25), rename_vocabulary="car", devices={"car": 1.0}, barge_in=1.8,
            explicit_feedback=0.3, corrections=0.2),
    Profile("terse-speaker",
            "a speaker that logs little: no n-best lists, confidences pushed up (power 0.5), no explicit feedback, "
            "users who rarely rephrase",
            asr_calibration=Calibration(power=0.5), nlu_calibration=Calibration(power=0.5),
            er_calibration=Calibration(power=0.5), wake_calibration=Calibration(power=0.5),
            asr_nbest=(1.0,), nlu_nbest=(1.0,), rephrase=0.5, explicit_feedback=0.0),
    Profile("llm-agent",
            "a voice agent built on an LLM (as Pipecat or LiveKit trace one): no wake word, no ER, no confidences "
            "and no n-best logged, the tool called stands for the intent, results only succeed or fail",
            wake=False, er=False, scores=(), asr_nbest=(1.0,), nlu_nbest=(1.0,),
            statuses={"partial": "success", "unsupported": "success", "clarify": "success", "fallback": "success"},
            rename_vocabulary="agent", devices=_PHONE, session_end=0.3, explicit_feedback=0.0, barge_in=1.3),
)}


def _draw_calibration(rng: np.random.Generator) -> Calibration:
    power = float(np.exp(rng.uniform(np.log(0.4), np.log(5.0))))
    low = float(rng.choice([0.0, 0.0, rng.uniform(0.0, 0.5)]))
    high = float(rng.choice([1.0, 1.0, rng.uniform(max(low + 0.3, 0.7), 1.0)]))
    return Calibration(power=round(power, 3), low=round(low, 3), high=round(high, 3), blur=round(float(rng.uniform(0, 0.4)), 3))


def _draw_sizes(rng: np.random.Generator, most: int) -> tuple[float, ...]:
    shares = rng.dirichlet(np.ones(most + 1))
    return tuple(float(x) for x in shares / shares.sum())


def draw_profile(rng: np.random.Generator, name: str) -> Profile:
    """A new random assistant: every knob drawn over a range wider than the named profiles span."""
    statuses: dict[str, str] = {}
    for status, instead in (("partial", "success"), ("unsupported", "fallback"), ("error", "fallback")):
        if rng.random() < 0.3:
            statuses[status] = instead
    sizes = _draw_sizes(rng, 3)
    nlu_sizes = _draw_sizes(rng, 3)
    devices = {"speaker": 0.42, "speaker_screen": 0.2, "tv": 0.1, "phone": 0.16, "car": 0.12}
    if rng.random() < 0.3:
        devices = {str(rng.choice(list(devices))): 1.0}
    wake = bool(rng.random() < 0.6)
    return Profile(
        name=name, description="drawn at random", wake=wake, er=bool(rng.random() < 0.65),
        error_rates={s: round(float(base * np.exp(rng.uniform(np.log(0.4), np.log(2.5)))), 4) for s, base in
                     (("wake", 0.03), ("asr", 0.11), ("nlu", 0.07), ("er", 0.08), ("result", 0.05))},
        wake_calibration=_draw_calibration(rng), asr_calibration=_draw_calibration(rng),
        nlu_calibration=_draw_calibration(rng), er_calibration=_draw_calibration(rng),
        asr_nbest=sizes, nlu_nbest=nlu_sizes, statuses=statuses,
        rename_vocabulary=name if rng.random() < 0.5 else "", devices=devices,
        session_end=round(float(rng.uniform(0.15, 0.7)), 3), rephrase=round(float(rng.uniform(0.3, 1.6)), 3),
        barge_in=round(float(rng.uniform(0.2, 2.0)), 3),
        explicit_feedback=round(float(rng.choice([0.0, rng.uniform(0.2, 1.5)])), 3),
        corrections=round(float(rng.choice([0.0, rng.uniform(0.1, 0.6)])), 3),
        scores=tuple(s for s in ("wake", "asr", "nlu", "er") if rng.random() >= 0.15),
    )


def profile_named(name: str) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"--profile {name}: unknown profile; expected one of {', '.join([*PROFILES, 'random'])}")
    return PROFILES[name]


def opaque_name(salt: str, name: str) -> str:
    """The name another assistant would give the same intent or domain."""
    return f"{salt[:4]}_{hashlib.blake2b((salt + name).encode(), digest_size=3).hexdigest()}"


def with_error_rates(profile: Profile, rates: dict[str, float]) -> Profile:
    return replace(profile, error_rates={**profile.error_rates, **rates}) if rates else profile
