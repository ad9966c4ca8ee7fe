"""`fpi map infer`: a first draft of a mapping, from the field names and value shapes of a team's
logs, for a person to read and correct. It guesses; every guess is a line they can see."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

import polars as pl

from fpi.io.mapping import Mapping, shipped_mappings
from fpi.io.otlp import read_spans
from fpi.contract.trace_format import RESULT_STATUSES
from fpi.contract.errors import TraceError
from fpi.io.raw_records import read_any
from fpi.io.sniff import detect_format

SAMPLE_ROWS = 5000

# Names teams give each trace field, most specific first; matched on the normalised field name.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "turn_id": ("turn_id", "turnid", "utterance_id", "request_id", "interaction_id", "event_id", "message_id", "id"),
    "session_id": ("session_id", "sessionid", "conversation_id", "dialog_id", "dialogue_id", "call_id", "session", "conversation"),
    "turn_index": ("turn_index", "turn_number", "turn_no", "turn_num", "turn", "sequence", "seq", "position", "index"),
    "timestamp": ("timestamp", "ts", "event_time", "created_at", "start_time", "datetime", "time", "date"),
    "locale": ("locale", "language", "lang"),
    "device.type": ("device_type", "device", "client", "channel"),
    "wake.detected": ("wake_detected", "wakeword_detected", "wake"),
    "wake.score": ("wake_score", "wakeword_score", "kws_score", "wake_confidence"),
    "asr.text": ("asr_text", "asr_transcript", "stt_text", "transcript", "transcription", "recognized_text", "user_text",
                 "utterance", "user_utterance", "query", "text", "asr"),
    "asr.confidence": ("asr_confidence", "asr_conf", "asr_score", "stt_confidence", "transcript_confidence",
                       "transcription_confidence", "recognition_confidence"),
    "nlu.intent": ("nlu_intent", "intent", "intent_name", "predicted_intent", "top_intent"),
    "nlu.domain": ("nlu_domain", "domain", "skill", "scenario"),
    "nlu.confidence": ("nlu_confidence", "nlu_conf", "intent_confidence", "intent_conf", "intent_score", "nlu_score"),
    "result.status": ("result_status", "response_status", "outcome", "status", "result"),
    "result.action": ("result_action", "action", "api_call", "function", "tool", "command"),
    "result.response": ("response_text", "system_response", "bot_response", "response", "reply", "prompt", "tts_text",
                        "system_text", "bot_text"),
    "result.latency_ms": ("latency_ms", "response_time_ms", "latency", "duration_ms"),
    "feedback.barge_in": ("barge_in", "bargein", "was_interrupted", "interrupted", "interruption"),
    "feedback.explicit": ("explicit_feedback", "user_feedback", "feedback", "rating", "thumbs"),
    "label": ("label", "gold_label", "failure_point", "annotation", "gold"),
}

STATUS_WORDS: dict[str, tuple[str, ...]] = {
    "success": ("success", "ok", "done", "completed", "complete", "succeeded", "handled", "fulfilled", "200"),
    "error": ("error", "fail", "failed", "failure", "exception", "timeout", "crash", "500"),
    "fallback": ("fallback", "no_match", "nomatch", "not_understood", "unknown", "none_intent", "oos", "out_of_scope"),
    "clarify": ("clarify", "clarification", "reprompt", "confirm", "disambiguate", "slot_request", "elicit"),
    "unsupported": ("unsupported", "not_supported", "cannot", "declined"),
    "partial": ("partial", "partially_done"),
    "none": ("none", "silence", "no_action", "noop"),
}
FEEDBACK_WORDS: dict[str, tuple[str, ...]] = {"positive": ("positive", "up", "thumbs_up", "good", "yes", "1"),
                  "negative": ("negative", "down", "thumbs_down", "bad", "no", "-1")}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass
class Column:
    """What one source field looks like."""

    path: str
    kind: str  # text | number | boolean | list | object
    examples: list[str]
    distinct: int
    low: float | None = None
    high: float | None = None


def _columns(frame: pl.DataFrame, prefix: str = "") -> list[Column]:
    out: list[Column] = []
    for name in frame.columns:
        if name in ("line", "raw") or name.startswith("_otlp"):
            continue
        series = frame[name]
        path = f"{prefix}{name}"
        if isinstance(series.dtype, pl.Struct):
            out += _columns(series.struct.unnest(), f"{path}.")
            continue
        values = series.drop_nulls()
        if values.len() == 0:
            continue
        if isinstance(series.dtype, pl.List):
            out.append(Column(path, "list", [], 0))
            continue
        if series.dtype == pl.String:  # CSV cells: numbers and booleans arrive as text, and empty cells as ""
            values = values.filter(values.str.strip_chars() != "")
            if values.len() == 0:
                continue
            as_number = values.str.strip_chars().cast(pl.Float64, strict=False)
            if as_number.null_count() == 0:
                values = as_number
            elif values.str.to_lowercase().is_in(["true", "false", "yes", "no"]).all():
                values = values.str.to_lowercase().is_in(["true", "yes"])
        kind = "boolean" if values.dtype == pl.Boolean else "number" if values.dtype.is_numeric() else "text"
        distinct = values.n_unique()
        examples = [str(v) for v in values.unique(maintain_order=True).head(8).to_list()]
        column = Column(path, kind, examples, distinct)
        if kind == "number":
            column.low, column.high = float(values.min()), float(values.max())  # type: ignore[arg-type]
        out.append(column)
    return out


def _score(target: str, column: Column) -> float:
    """How well a field's name and values fit a trace field (0: not at all)."""
    name, leaf = _norm(column.path), _norm(column.path.split(".")[-1])
    best = 0.0
    for rank, synonym in enumerate(SYNONYMS[target]):
        weight = 1.0 - rank * 0.02
        if synonym in (name, leaf):
            best = max(best, 3.0 * weight)
        elif name.endswith("_" + synonym) or leaf.endswith("_" + synonym) or name.startswith(synonym + "_"):
            best = max(best, 1.5 * weight)
    if best == 0:
        return 0.0
    fits = _fits(target, column)
    return best if fits else 0.0


def _fits(target: str, column: Column) -> bool:
    if target.endswith(("confidence", "score")):
        return column.kind == "number" and column.low is not None and column.low >= 0 and (column.high or 0) <= 100
    if target in ("turn_index", "result.latency_ms"):
        return column.kind == "number" and (column.low or 0) >= 0
    if target in ("wake.detected", "feedback.barge_in"):
        return column.kind == "boolean" or (column.kind == "number" and column.distinct <= 2)
    if target == "timestamp":
        return column.kind == "number" and (column.low or 0) > 1e8 or column.kind == "text"
    return column.kind in ("text", "number") if target in ("turn_id", "session_id") else column.kind == "text"


def _assign(columns: list[Column]) -> dict[str, Column]:
    """Each trace field to its best-fitting source field, each source field used once."""
    pairs = sorted(((s, t, c.path) for t in SYNONYMS for c in columns if (s := _score(t, c)) > 0),
                   key=lambda p: (-p[0], list(SYNONYMS).index(p[1]), p[2]))
    by_path = {c.path: c for c in columns}
    chosen: dict[str, Column] = {}
    used: set[str] = set()
    for _, target, path in pairs:
        if target in chosen or path in used:
            continue
        chosen[target] = by_path[path]
        used.add(path)
    return chosen


def _values(column: Column, words: dict[str, tuple[str, ...]], ours: tuple[str, ...]) -> list[str]:
    lines = []
    for example in column.examples:
        key = _norm(example)
        match = next((label for label, synonyms in words.items() if key in synonyms), None)
        if example in ours:
            continue
        lines.append(f"      {json.dumps(example)}: {match}" if match else f"      {json.dumps(example)}: ???  # one of {', '.join(ours)}")
    return lines


def _spec_lines(target: str, column: Column) -> list[str]:
    ref = json.dumps(column.path) if not re.fullmatch(r"[A-Za-z_][\w.]*", column.path) else column.path
    extra: list[str] = []
    if target.endswith(("confidence", "score")) and (column.high or 0) > 1:
        extra.append("    scale: [0, 100]")
    if target == "timestamp" and column.kind == "number":
        unit = "unix_ms" if (column.low or 0) > 1e11 else "unix_s"
        extra.append(f"    time: {unit}")
    if target == "result.status":
        values = _values(column, STATUS_WORDS, RESULT_STATUSES)
        if values:
            extra += ["    values:", *values]
    if target == "feedback.explicit":
        values = _values(column, FEEDBACK_WORDS, ("positive", "negative"))
        if values:
            extra += ["    values:", *values]
    if not extra:
        return [f"  {target}: {ref}"]
    return [f"  {target}:", f"    from: {ref}", *extra]


def draft_flat(frame: pl.DataFrame, label: str, form: str) -> str:
    columns = _columns(frame.head(SAMPLE_ROWS))
    chosen = _assign(columns)
    stages = sorted({t.split(".")[0] for t in chosen if t.split(".")[0] in ("wake", "asr", "nlu", "er", "result", "feedback")},
                    key=["wake", "asr", "nlu", "er", "result", "feedback"].index)
    lines = [f"# Drafted by `fpi map infer {label}` from {min(frame.height, SAMPLE_ROWS)} records ({form}).",
             "# Every line is a guess from names and values: read it, correct it, then try it with",
             f"#   fpi validate {label} --mapping THIS_FILE",
             "# The language is described in docs/mapping.md.",
             f"format: {form}"]
    if stages:
        lines.append(f"stages: [{', '.join(stages)}]  # the stages this assistant has")
    if "turn_index" not in chosen:
        order = chosen.get("timestamp")
        lines.append(f"order: {order.path}  # orders each session's turns" if order
                     else "# order: FIELD  # no turn index found: turns keep their input order within a session")
    lines.append("fields:")
    for target in SYNONYMS:
        if target in chosen:
            lines += _spec_lines(target, chosen[target])
    if "session_id" not in chosen:
        lines.append("  session_id: ???  # required: the field that groups turns into conversations")
    unused = [c for c in columns if c.path not in {c.path for c in chosen.values()}]
    if unused:
        lines.append("# Not mapped (map them if they carry a stage's output or its confidence):")
        lines += [f"#   {c.path}: {c.kind}, e.g. {', '.join(c.examples[:3])[:80]}" for c in unused]
    return "\n".join(lines) + "\n"


def draft_spans(data: bytes, label: str) -> str:
    spans, _ = read_spans(data, label)
    names = Counter(s.name for s in spans)
    attributes: dict[str, Counter] = {}
    for span in spans:
        attributes.setdefault(span.name, Counter()).update(span.attributes.keys())
    kinds = {s.attributes.get("openinference.span.kind") for s in spans} - {None}
    base = ("livekit" if "agent_turn" in names else "pipecat" if "turn" in names and "conversation" in names
            else "openinference" if kinds else None)
    lines = [f"# Drafted by `fpi map infer {label}` from {len(spans)} spans (OpenTelemetry).",
             "# Read and correct it; the language is described in docs/mapping.md."]
    if base:
        lines += [f"extends: {base}  # these spans look like {base}'s; its mapping is `fpi map show {base}`"]
    else:
        lines += ["format: otlp", "spans:", "  turn: {name: ???}  # which spans are turns (or `turn: trace`)", "  select: {}"]
    hints = _span_hints(attributes, shipped_mappings_references(base))
    lines.append("fields:" if hints else "# fields: add what the spans carry beyond the shipped mapping")
    lines += hints
    lines.append("# Span names and their attributes, as seen:")
    for name, count in names.most_common(30):
        keys = ", ".join(k for k, _ in attributes.get(name, Counter()).most_common(12))
        lines.append(f"#   {name} ({count}): {keys}")
    return "\n".join(lines) + "\n"


def shipped_mappings_references(name: str | None) -> set[str]:
    if name is None:
        return set()
    from fpi.io.mapping import load_mapping

    return {ref.partition(":")[2] for ref in load_mapping(name).references()}


def _span_hints(attributes: dict[str, Counter], known: set[str]) -> list[str]:
    """Attributes a team added that look like a confidence or an intent."""
    hints = []
    for span_name, keys in sorted(attributes.items()):
        for key in sorted(keys):
            if key in known:
                continue
            leaf = _norm(key)
            target = ("asr.confidence" if "confidence" in leaf and any(w in leaf for w in ("stt", "asr", "transcript"))
                      else "nlu.confidence" if "confidence" in leaf and any(w in leaf for w in ("nlu", "intent"))
                      else "nlu.intent" if leaf.endswith("intent") else None)
            if target:
                hints.append(f"  {target}: {span_name}:{key}  # `{span_name}` must be a selector (spans/select)")
    return hints


def draft_mapping(data: bytes, label: str) -> str:
    """YAML text of a draft mapping for the records in `data`."""
    form = detect_format(data)
    if form == "otlp":
        return draft_spans(data, label)
    frame, bad, _ = read_any(data, label, Mapping(name="draft", source="draft", fields={}, format=form))
    if not frame.height:
        why = f"; line {bad[0][0]}: {bad[0][2]}" if bad else ""
        raise TraceError([f"{label}: no records to draft a mapping from: not JSON Lines, CSV/TSV, Parquet or "
                          f"OpenTelemetry spans{why}"])
    return draft_flat(frame, label, form)


__all__ = ["draft_mapping", "shipped_mappings"]
